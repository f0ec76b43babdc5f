"""Metrics against hand-computed values and against the reference libraries called directly."""

from __future__ import annotations

import math
import random
import shutil

import pytest
import torch

from flamingo_vlm.evaluate.metrics import (
    caption_metrics,
    mean_vqa_accuracy,
    normalize_vqa_answer,
    roc_auc,
    topk_accuracy,
    vqa_accuracy,
)
from flamingo_vlm.evaluate.metrics.vqa import process_digits_articles, process_punctuation


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("  Red\n", "red"),  # whitespace and case
        ("black/white", "black white"),  # a mark glued between words becomes a space
        ("yes!", "yes"),  # ... and trailing ones vanish with the split
        ("hello , world", "hello world"),  # a mark touching a space is dropped
        ("1,000", "1000"),  # digit,digit anywhere: every mark is dropped
        ("dog.", "dog"),  # a period not followed by a digit is dropped
        ("3.5", "3.5"),  # a decimal point stays
        ("Two", "2"),  # number words become digits
        ("none", "0"),
        ("ten dogs", "10 dogs"),
        ("a dog", "dog"),  # articles go
        ("The Cat on an Apple", "cat on apple"),
        ("dont", "don't"),  # contractions get their apostrophe back
        ("isnt it", "isn't it"),
        ("(tennis)", "tennis"),
    ],
)
def test_vqa_normalization_rules(raw: str, normalized: str) -> None:
    assert normalize_vqa_answer(raw) == normalized


@pytest.mark.parametrize(
    ("num_matching", "expected"),
    [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)],
)
def test_vqa_accuracy_leave_one_out(num_matching: int, expected: float) -> None:
    # 3 of 10 humans: the 3 subsets without a matching human score 2/3, the other 7 score 1 -> 0.9.
    humans = ["yes"] * num_matching + ["no"] * (10 - num_matching)
    assert vqa_accuracy("yes", humans) == pytest.approx(expected)


def test_vqa_accuracy_matches_through_normalization() -> None:
    humans = ["two", "2", "2 ", "three", "3", "3", "3", "four", "4", "4"]
    assert vqa_accuracy("Two.", humans) == pytest.approx(0.9)
    assert vqa_accuracy("the 3", humans) == pytest.approx(1.0)
    assert mean_vqa_accuracy(["Two.", "the 3"], [humans, humans]) == pytest.approx(0.95)
    with pytest.raises(ValueError, match="predictions"):
        mean_vqa_accuracy(["a"], [humans, humans])


@pytest.mark.skipif(shutil.which("java") is None, reason="the PTB tokenizer needs Java")
# The official script (vqaEval.py) normalises nothing when the 10 annotators agree.
@pytest.mark.parametrize(
    ("prediction", "humans", "official", "both"),
    [
        ("Cat", ["cat"] * 10, 0.0, 1.0),  # the case: no normalisation on either side
        ("cat.", ["cat"] * 10, 0.0, 1.0),
        ("two", ["2"] * 10, 0.0, 1.0),
        (" cat\n", ["cat"] * 10, 1.0, 1.0),  # whitespace is cleaned in every case
        ("cat", ["Cat"] * 10, 0.0, 1.0),
        ("Cat", ["cat"] * 9 + ["Cat"], 1.0, 1.0),  # one disagreeing annotator: both sides normalised
        ("cat", ["cat"] * 9 + ["cat "], 1.0, 1.0),  # "cat " == "cat" once stripped: they agree
        ("cat", ["cat"], 0.0, 0.0),  # one human: its only leave-one-out subset is empty
    ],
)
def test_vqa_accuracy_official_normalises_only_disagreeing_humans(prediction, humans, official, both) -> None:
    assert vqa_accuracy(prediction, humans) == pytest.approx(official)
    assert vqa_accuracy(prediction, humans, normalization="official") == pytest.approx(official)
    assert vqa_accuracy(prediction, humans, normalization="normalize_both") == pytest.approx(both)


def _official_loop(prediction: str, humans: list[str]) -> float:
    """vqaEval.py's per-question control flow, on its own data shapes: answer dicts with an ``answer_id``,
    normalised in place only when their texts differ, leave-one-out by dict inequality."""
    gts = [
        {"answer": a.replace("\n", " ").replace("\t", " ").strip(), "answer_id": i + 1} for i, a in enumerate(humans)
    ]
    res = prediction.replace("\n", " ").replace("\t", " ").strip()
    if len({g["answer"] for g in gts}) > 1:
        for g in gts:
            g["answer"] = process_digits_articles(process_punctuation(g["answer"]))
        res = process_digits_articles(process_punctuation(res))
    accs = []
    for left_out in gts:
        others = [g for g in gts if g != left_out]
        accs.append(min(1, len([g for g in others if g["answer"] == res]) / 3))
    return sum(accs) / len(accs)


def test_vqa_accuracy_equals_the_official_control_flow_on_adversarial_answers() -> None:
    pool = ["cat", "Cat", "cat.", " cat", "two", "2", "Two", "1,000", "1000", "a dog", "dog", "dont", "don't", "yes"]
    rng = random.Random(0)
    differ_from_both = 0
    for _ in range(400):
        humans = [rng.choice(pool)] * 10 if rng.random() < 0.4 else [rng.choice(pool) for _ in range(10)]
        prediction = rng.choice(pool)
        official = vqa_accuracy(prediction, humans)
        assert official == pytest.approx(_official_loop(prediction, humans)), (prediction, humans)
        differ_from_both += official != pytest.approx(vqa_accuracy(prediction, humans, normalization="normalize_both"))
    assert differ_from_both > 0  # the adversarial set does tell the two rules apart


def test_vqa_digit_comma_drops_every_mark() -> None:
    # A digit,digit anywhere in the text removes every mark instead of turning glued ones into spaces.
    assert normalize_vqa_answer("red,blue") == "red blue"
    assert normalize_vqa_answer("1,5 red,blue") == "15 redblue"
    assert normalize_vqa_answer("1,000 dogs.") == "1000 dogs"
    humans = ["1000 dogs", "1000 dogs", "many", "many", "lots", "lots", "lots", "lots", "some", "some"]
    # 2 humans match: 8 subsets keep both (2/3), 2 keep one (1/3) -> (8 * 2/3 + 2 * 1/3) / 10 = 0.6
    assert vqa_accuracy("1,000 dogs.", humans) == pytest.approx(0.6)


def test_vqa_period_strip_passes_re_unicode_as_count() -> None:
    # re.sub(..., re.UNICODE) in vqaEval.py is count=32: a 33rd trailing period survives.
    assert normalize_vqa_answer("yes" + "." * 32) == "yes"
    assert normalize_vqa_answer("yes" + "." * 40) == "yes" + "." * 8
    humans = ["yes"] * 4 + ["no"] * 6
    assert vqa_accuracy("yes" + "." * 32, humans) == pytest.approx(1.0)
    assert vqa_accuracy("yes" + "." * 33, humans) == 0.0
    assert normalize_vqa_answer("3.5.") == "3.5"  # a period before a digit stays


def test_vqa_accuracy_rejects_an_unknown_normalization() -> None:
    with pytest.raises(ValueError, match="normalization"):
        vqa_accuracy("cat", ["cat"], normalization="lenient")
    assert mean_vqa_accuracy(["Cat"], [["cat"] * 10], normalization="normalize_both") == 1.0
    assert mean_vqa_accuracy(["Cat"], [["cat"] * 10]) == 0.0


def test_caption_metrics_equal_pycocoevalcap() -> None:
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    refs = {
        "1": ["A red square above a blue circle.", "a red square, over a blue circle"],
        "2": ["Two yellow stars on grey.", "two stars that are yellow"],
        "3": ["A green triangle.", "the triangle is green!"],
    }
    preds = {"1": "a red square above a circle", "2": "two yellow stars", "3": "a green triangle"}
    ours = caption_metrics(preds, refs)

    tok = PTBTokenizer()
    gts = tok.tokenize({k: [{"caption": c} for c in v] for k, v in refs.items()})
    res = tok.tokenize({k: [{"caption": c}] for k, c in preds.items()})
    assert ours["cider"] == pytest.approx(Cider().compute_score(gts, res)[0], abs=1e-12)
    assert ours["bleu4"] == pytest.approx(Bleu(4).compute_score(gts, res, verbose=0)[0][3], abs=1e-12)
    assert ours["cider"] > 0


def test_roc_auc_equals_sklearn() -> None:
    from sklearn.metrics import roc_auc_score

    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (50,), generator=g).tolist()
    scores = torch.rand(50, generator=g).tolist()
    assert roc_auc(labels, scores) == roc_auc_score(labels, scores)
    assert roc_auc([0, 1, 0, 1], [0.1, 0.9, 0.2, 0.8]) == 1.0
    with pytest.raises(ValueError, match="both"):
        roc_auc([1, 1], [0.2, 0.3])


def test_topk_accuracy_known_values() -> None:
    scores = torch.tensor([[0.1, 0.5, 0.4], [0.9, 0.05, 0.05], [0.2, 0.3, 0.5]])
    labels = [2, 0, 0]
    assert topk_accuracy(scores, labels, k=1) == pytest.approx(1 / 3)
    assert topk_accuracy(scores, labels, k=2) == pytest.approx(2 / 3)
    assert topk_accuracy(scores, labels, k=5) == pytest.approx(1.0)  # k clipped to num_classes
    assert math.isclose(topk_accuracy(scores[:1], [1], k=1), 1.0)
