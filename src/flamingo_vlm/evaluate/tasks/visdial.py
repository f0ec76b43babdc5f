"""VisDial v1.0: rank the 100 candidate answers of each dialog round given the image, caption and history.

Layout as published (https://visualdialog.org/data; readers: batra-mlp-lab/visdial-challenge-starter-pytorch)::

    visdial_1.0_{split}.json     {"version": "1.0", "split": "val2018",
                                  "data": {"questions": [str, ...], "answers": [str, ...],
                                           "dialogs": [{"image_id": int, "caption": str,
                                                        "dialog": [{"question": qi, "answer": ai,
                                                                    "answer_options": [100 answer indices],
                                                                    "gt_index": int}, ...]}]}}
    visdial_1.0_{split}_dense_annotations.json   [{"image_id", "round_id" (1-based), "gt_relevance": [100]}]
    VisualDialog_val2018/VisualDialog_val2018_{image_id:012d}.jpg     (val; test: ..._test2018_...)
    train2014/COCO_train2014_{image_id:012d}.jpg or val2014/COCO_val2014_...   (train: COCO's images)

Every round with a ground truth is one query; its history is the caption and the earlier rounds as
interleaved text (the paper's appendix), e.g. ``<image>a man on a bike. Question: is it sunny? Answer: yes.
Question: what colour is the bike? Answer:``, and the 100 options are ranked by log-likelihood. R@1/5/10,
mean rank and MRR cover every round; NDCG the rounds with dense annotations (one per val dialog).
The test split has no ground truth (its server scores it): its rounds are counted as ``no_ground_truth``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import torch

from flamingo_vlm.evaluate.metrics.ranking import ndcg, retrieval_metrics
from flamingo_vlm.evaluate.tasks.base import Example, Prediction, RecordChecker, Split, read_json, record_list

VISDIAL_TEMPLATE = "<image>{history}Question: {question} Answer: {answer}<|endofchunk|>"
_COCO = ("train2014/COCO_train2014_{image_id:012d}.jpg", "val2014/COCO_val2014_{image_id:012d}.jpg")
VISDIAL_IMAGES: dict[str, tuple[str, ...]] = {
    "train": _COCO,
    "val": ("VisualDialog_val2018/VisualDialog_val2018_{image_id:012d}.jpg",),
    "test": ("VisualDialog_test2018/VisualDialog_test2018_{image_id:012d}.jpg",),
}


def _image(root: Path, split: str, image_id: int) -> str:
    """The image's path: the first of the split's patterns that exists (else the first, counted as missing)."""
    patterns = VISDIAL_IMAGES.get(split) or tuple(p for ps in VISDIAL_IMAGES.values() for p in ps)
    paths = [root / p.format(image_id=image_id) for p in patterns]
    return str(next((p for p in paths if p.is_file()), paths[0]))


def _sentence(text: str) -> str:
    return text.strip().rstrip(".")


def _question(text: str) -> str:
    text = str(text).strip()
    if not text:
        raise ValueError("question: empty")
    return text if text.endswith("?") else text + "?"


def _dense(root: Path, split: str, bad: Counter) -> dict[tuple[int, int], tuple[float, ...]]:
    """(image_id, round_id) → relevance of each option, from the dense annotations file if there is one.

    The val file names the list ``gt_relevance``; ``relevance`` is accepted too (the train file's name
    in some releases: not confirmed, see docs/evaluate.md).
    """
    path = root / f"visdial_1.0_{split}_dense_annotations.json"
    if not path.is_file():
        return {}
    out = {}
    for record in record_list(read_json(path), None, path, "a list of dense annotation records"):
        try:
            relevance = record["gt_relevance"] if "gt_relevance" in record else record["relevance"]
            out[int(record["image_id"]), int(record["round_id"])] = tuple(float(r) for r in relevance)
        except (KeyError, TypeError, ValueError):
            bad["malformed_dense_annotation"] += 1
    return out


def _round_example(
    turn: dict, image_id: int, round_id: int, image: str, history: str, questions: list, answers: list, dense: dict
) -> Example:
    question = _question(questions[turn["question"]])
    options = tuple(str(answers[i]).strip() for i in turn["answer_options"])
    gt = int(turn["gt_index"])
    if len(options) < 2 or not 0 <= gt < len(options):
        raise ValueError(f"gt_index {gt} is not an index of the {len(options)} answer_options")
    relevance = dense.get((image_id, round_id), ())
    if relevance and len(relevance) != len(options):
        raise ValueError(f"gt_relevance has {len(relevance)} values for {len(options)} answer_options")
    return Example(
        id=f"{image_id}_{round_id}",
        media=(image,),
        fields={"history": history, "question": question},
        answer=options[gt],
        references=(options[gt],),
        label=gt,
        candidates=options,
        relevance=relevance,
    )


Dense = dict[tuple[int, int], tuple[float, ...]]


def _add_dialog(
    checker: RecordChecker, dialog: dict, root: Path, split: str, questions: list, answers: list, dense: Dense
) -> None:
    """Each round of one dialog with a ground truth (``gt_index``) as a query; every answered round extends
    the history. The test split's rounds have none (counted as ``no_ground_truth``: its server scores them).
    A malformed round ends the dialog, since the later rounds' history would lack its answer."""
    try:
        image_id = int(dialog["image_id"])
        history = _sentence(str(dialog["caption"])) + ". "
        turns = list(dialog["dialog"])
    except (KeyError, TypeError, ValueError):
        checker.bad["malformed_record"] += 1
        return
    image = _image(root, split, image_id)
    for round_id, turn in enumerate(turns, start=1):
        try:
            if "gt_index" in turn:
                example = _round_example(turn, image_id, round_id, image, history, questions, answers, dense)
                checker.add(lambda e=example: e)
            else:
                checker.bad["no_ground_truth"] += 1
            if "answer" not in turn:
                return  # nothing follows an unanswered round
            question, answer = _question(questions[turn["question"]]), _sentence(str(answers[turn["answer"]]))
            history += f"Question: {question} Answer: {answer}. "
        except (KeyError, TypeError, ValueError, IndexError):
            checker.bad["malformed_record"] += 1
            return


def read_visdial(root: Path, split: str) -> Split:
    """Read ``visdial_1.0_{split}.json`` (and its dense annotations), one query per answered round."""
    path = root / f"visdial_1.0_{split}.json"
    data = read_json(path)
    body = data.get("data") if isinstance(data, dict) else None
    if not isinstance(body, dict):
        raise ValueError(f"{path}: expected VisDial's {{'data': {{'questions', 'answers', 'dialogs'}}}}")
    questions = record_list(body, "questions", path, "data.questions, a list of strings")
    answers = record_list(body, "answers", path, "data.answers, a list of strings")
    dialogs = record_list(body, "dialogs", path, "data.dialogs, a list of dialogs")
    checker = RecordChecker(f"{root.name}/{split}")
    dense = _dense(root, split, checker.bad)
    for dialog in dialogs:
        _add_dialog(checker, dialog, root, split, questions, answers, dense)
    return checker.split()


def score_visdial(examples: Sequence[Example], predictions: Sequence[Prediction], _: Sequence[str]) -> dict[str, float]:
    """NDCG (on rounds with dense relevance; percent), MRR, R@1/5/10 (percent) and mean rank (1–100)."""
    width = max(len(e.candidates) for e in examples)
    scores = torch.full((len(examples), width), -float("inf"), dtype=torch.float64)  # (n, c); pads rank last
    for i, p in enumerate(predictions):
        if p.candidate_logprobs is None:
            raise ValueError("a ranking task's prediction needs its candidate log-likelihoods")
        scores[i, : len(p.candidate_logprobs)] = torch.tensor(p.candidate_logprobs, dtype=torch.float64)
    out = {}
    dense = [i for i, e in enumerate(examples) if e.relevance]
    if dense:
        relevance = torch.zeros((len(dense), width), dtype=torch.float64)
        for row, i in enumerate(dense):
            relevance[row, : len(examples[i].relevance)] = torch.tensor(examples[i].relevance, dtype=torch.float64)
        out["ndcg"] = 100.0 * ndcg(scores[dense], relevance)
    sparse = retrieval_metrics(scores, [e.label for e in examples])
    out["mrr"] = 100.0 * sparse["mrr"]
    out.update({k: 100.0 * sparse[k] for k in ("r@1", "r@5", "r@10")})
    out["mean_rank"] = sparse["mean_rank"]
    return out
