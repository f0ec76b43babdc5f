"""HatefulMemes: JSONL records ``{"id", "img", "text", "label"}`` with ``img`` relative to the root.

A close-ended task: the model scores " yes" and " no" after the prompt, and ROC-AUC is computed on
P(yes) normalised over the two answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from flamingo_vlm.evaluate.metrics.classification import roc_auc
from flamingo_vlm.evaluate.tasks.base import Example, Prediction, RecordChecker, Split
from flamingo_vlm.io import MAX_ANNOTATION_BYTES, loads_json, read_bytes

HATEFUL_MEMES_TEMPLATE = (
    '<image>is an image with written: "{text}" on it. Is it hateful? Answer: {answer}<|endofchunk|>'
)
ANSWERS = ("no", "yes")  # index = label


def _meme_example(record: dict, root: Path) -> Example:
    label = int(record["label"])
    if label not in (0, 1):
        raise ValueError(f"label {label} is not 0/1")
    return Example(
        id=str(record["id"]),
        media=(str(root / record["img"]),),
        fields={"text": str(record["text"]).strip()},
        answer=ANSWERS[label],
        references=(ANSWERS[label],),
        label=label,
    )


def read_hateful_memes(root: Path, split: str) -> Split:
    """Read ``{split}.jsonl`` (``train``, ``dev_seen``, ``test_seen``, ...); unlabeled records are malformed here."""
    path = root / f"{split}.jsonl"
    if not path.is_file():
        raise ValueError(f"expected the HatefulMemes file {path}, which does not exist")
    checker = RecordChecker(f"{root.name}/{split}")
    try:
        lines = read_bytes(path, MAX_ANNOTATION_BYTES).decode("utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not UTF-8 text: {err}") from err
    for line in lines:
        if not line.strip():
            continue
        try:
            record = loads_json(line, path)
        except ValueError:  # not JSON, or nested too deeply
            checker.bad["malformed_record"] += 1
            continue
        checker.add(lambda r=record: _meme_example(r, root))
    return checker.split(candidates=list(ANSWERS))


def score_hateful_memes(
    examples: Sequence[Example], predictions: Sequence[Prediction], candidates: Sequence[str]
) -> dict[str, float]:
    """ROC-AUC (percent) of P(yes) = softmax over the two answers' log-likelihoods."""
    logprobs = torch.tensor([p.candidate_logprobs for p in predictions])  # (n, 2)
    p_yes = logprobs.softmax(dim=-1)[:, list(candidates).index("yes")]
    return {"roc_auc": 100.0 * roc_auc([e.label for e in examples], p_yes.tolist())}
