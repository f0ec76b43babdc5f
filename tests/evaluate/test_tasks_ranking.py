"""STAR, VisDial and RareAct readers on files in the published layouts (malformed records included),
their scorers, the zero-shot rule, and cached candidate ranking against naive per-candidate scoring."""

from __future__ import annotations

import json

import pytest
import torch
from ranking_layouts import RAREACT_HEADER, star_record, write_rareact, write_star, write_visdial

from flamingo_vlm.evaluate.tasks import Prediction, get_task
from flamingo_vlm.evaluate.tasks.rareact import read_rareact, score_rareact
from flamingo_vlm.evaluate.tasks.star import read_star, score_star
from flamingo_vlm.evaluate.tasks.visdial import read_visdial, score_visdial
from flamingo_vlm.video import split_time_fragment


def test_star_reader_counts_each_malformed_record(tmp_path) -> None:
    bad = [
        star_record(10, answer="purple"),  # answer not among the choices
        star_record(11, choices=[{"choice_id": 0, "choice": "red"}]),  # not 4 choices
        star_record(12, question_id="Other_T1_12"),  # no STAR question type
        star_record(13, start=5.0, end=2.0),  # the segment ends before it starts
        {k: v for k, v in star_record(14).items() if k != "question"},  # a field missing
        star_record(15, video_id=None),  # video_id null: no file
    ]
    write_star(tmp_path, {"val": 2}, extra={"val": bad})
    (tmp_path / "Charades_v1_480" / "None.mp4").unlink(missing_ok=True)
    split = read_star(tmp_path, "val")
    assert len(split.examples) == 2 and dict(split.bad) == {"malformed_record": 5, "missing_media": 1}
    first = split.examples[0]
    assert (
        first.fields == {"question": "which colour?", "type": "Interaction"} and first.candidates[first.label] == "red"
    )
    assert split_time_fragment(first.media[0])[1:] == (1.0, 3.0)
    (tmp_path / "STAR_val.json").write_text(json.dumps({"questions": []}))
    with pytest.raises(ValueError, match="STAR_val.json"):
        read_star(tmp_path, "val")


def test_star_scores_accuracy_per_question_type(tmp_path) -> None:
    write_star(tmp_path, {"val": 4})
    examples = read_star(tmp_path, "val").examples  # types: Interaction, Sequence, Prediction, Feasibility
    logprobs = [
        tuple(1.0 if k == (e.label if i < 3 else (e.label + 1) % 4) else 0.0 for k in range(4))
        for i, e in enumerate(examples)
    ]
    preds = [Prediction(e.candidates[lp.index(1.0)], lp) for e, lp in zip(examples, logprobs)]
    out = score_star(examples, preds, [])
    assert out["accuracy"] == 75.0 and out["accuracy_Feasibility"] == 0.0 and out["accuracy_Sequence"] == 100.0


def test_visdial_reader_history_dense_relevance_and_malformed(tmp_path) -> None:
    write_visdial(tmp_path, {"val": 4})
    path = tmp_path / "visdial_1.0_val.json"
    data = json.loads(path.read_text())
    dialogs = data["data"]["dialogs"]
    dialogs.append({"image_id": 7})  # no caption: malformed
    dialogs.append({**dialogs[0], "image_id": 100, "dialog": [{**dialogs[0]["dialog"][0], "gt_index": 99}]})
    test_round = {k: v for k, v in dialogs[0]["dialog"][1].items() if k not in ("answer", "gt_index")}
    dialogs.append({**dialogs[0], "dialog": [dialogs[0]["dialog"][0], test_round]})  # unanswered last round
    path.write_text(json.dumps(data))
    dense_path = tmp_path / "visdial_1.0_val_dense_annotations.json"
    dense_path.write_text(json.dumps(json.loads(dense_path.read_text()) + [{"image_id": 100}]))
    split = read_visdial(tmp_path, "val")
    assert dict(split.bad) == {"malformed_record": 2, "no_ground_truth": 1, "malformed_dense_annotation": 1}
    assert len(split.examples) == 5  # 2 dialogs × 2 rounds, and the answered round before the unanswered one
    second = split.examples[1]
    assert second.id == "100_2" and second.fields["question"] == "is it square?"
    assert second.fields["history"] == "a red square. Question: what colour? Answer: red. "
    assert second.candidates[second.label] == "yes" and len(second.candidates) == 5
    assert split.examples[0].relevance == () and second.relevance[second.label] == 1.0  # dense: last round only
    assert second.media[0].endswith("VisualDialog_val2018/VisualDialog_val2018_000000000100.jpg")
    path.write_text(json.dumps({"data": {"questions": [], "answers": []}}))
    with pytest.raises(ValueError, match="dialogs"):
        read_visdial(tmp_path, "val")


def test_visdial_scores(tmp_path) -> None:
    write_visdial(tmp_path, {"val": 2})
    examples = read_visdial(tmp_path, "val").examples
    # The model ranks the ground truth first in round 1 and third in round 2.
    preds = []
    for e, gt_rank in zip(examples, (1, 3)):
        scores = [0.0] * len(e.candidates)
        others = [k for k in range(len(scores)) if k != e.label]
        for r, k in enumerate(others):
            scores[k] = -float(r + 1) if r + 1 < gt_rank else -float(r + 2)
        scores[e.label] = -float(gt_rank)
        preds.append(Prediction("", tuple(scores)))
    out = score_visdial(examples, preds, [])
    assert out["r@1"] == 50.0 and out["mean_rank"] == 2.0 and out["mrr"] == pytest.approx(100 * (1 + 1 / 3) / 2)
    assert list(out)[0] == "ndcg" and 0.0 <= out["ndcg"] <= 100.0


def test_rareact_reader_candidates_and_malformed(tmp_path) -> None:
    extra = [
        [90, "vid0", 0, 2, 0, "push", "red", 7],  # annotation outside 0-4
        [91, "vid0", 0, 2, 0, "push", "", 1],  # empty noun
        [92, "vid0", 3, 1, 0, "push", "red", 1],  # ends before it starts
        [93, "nofile", 0, 2, 0, "push", "red", 0],  # no video
    ]
    write_rareact(tmp_path, 6, extra_rows=extra)
    (tmp_path / "videos" / "nofile.mp4").unlink()
    split = read_rareact(tmp_path, "test")
    assert len(split.examples) == 6 and dict(split.bad) == {"malformed_record": 3, "missing_media": 1}
    positive, negative = split.examples[0], split.examples[1]
    assert positive.candidates == ("lift blue", "lift red", "push blue", "push red")  # every action
    assert negative.candidates == ("push blue",) and negative.label == 0  # its own action only
    preds = [Prediction(e.answer, tuple(-float(k) for k in range(len(e.candidates)))) for e in split.examples]
    assert 0.0 <= score_rareact(split.examples, preds, [])["mwap"] <= 100.0
    (tmp_path / "rareact.csv").write_text(",".join(h for h in RAREACT_HEADER if h != "noun") + "\n")
    with pytest.raises(ValueError, match="noun"):
        read_rareact(tmp_path, "test")


def test_rareact_is_zero_shot_only(tmp_path, capsys) -> None:
    from flamingo_vlm import cli

    spec = get_task("rareact")
    spec.check_shots([0])
    with pytest.raises(ValueError, match="zero-shot"):
        spec.check_shots([0, 4])
    argv = ["eval", "--model", str(tmp_path), "--task", "rareact", "--data-root", str(tmp_path), "--shots", "0", "4"]
    assert cli.main(argv) == 2
    assert "rareact is a zero-shot benchmark" in capsys.readouterr().err


def test_cached_ranking_equals_naive_over_100_candidates(tiny_flamingo_dir) -> None:
    """The prompt run once and its caches expanded over chunks of candidates gives each candidate's
    log-likelihood exactly as running prompt + candidate from scratch does."""
    from PIL import Image

    from flamingo_vlm import Flamingo, FlamingoProcessor
    from flamingo_vlm.evaluate.ranking import candidate_logprobs

    model = Flamingo.from_pretrained(tiny_flamingo_dir).eval()
    processor = FlamingoProcessor.from_model(model)
    prompt = "<image>a red square. Question: what colour? Answer: red. Question: is it square? Answer:"
    inputs = processor([prompt], images=[[Image.new("RGB", (24, 24), (200, 30, 30))]], padding_side="left")
    words = ["red", "green", "blue", "yes", "no", "two", "a square", "the circle"]
    texts = [[f" {words[i % 8]} {words[(i // 8) % 8]}" + " no" * (i % 3) + "<|endofchunk|>" for i in range(100)]]
    candidates = processor.tokenize_candidates(texts)[0]
    cached = candidate_logprobs(model, inputs, candidates, cached=True, candidate_batch_size=32)
    naive = candidate_logprobs(model, inputs, candidates, cached=False, candidate_batch_size=32)
    assert cached.shape == (100,) and torch.isfinite(cached).all()
    torch.testing.assert_close(cached, naive, atol=1e-4, rtol=1e-5)


def test_chance_of_a_ranking_task_is_its_metric_under_random_scores(tmp_path) -> None:
    from flamingo_vlm.evaluate.baselines import chance_baseline, random_ranking

    write_star(tmp_path / "star", {"val": 8})
    examples = read_star(tmp_path / "star", "val").examples
    assert random_ranking(get_task("star"), examples, [], draws=400)["accuracy"] == pytest.approx(25.0, abs=4.0)
    write_visdial(tmp_path / "visdial", {"val": 4})
    chance = chance_baseline("visdial", tmp_path / "visdial")
    assert list(chance) == ["ndcg", "mrr", "r@1", "r@5", "r@10", "mean_rank"] and chance["r@5"] == 100.0  # 5 options
