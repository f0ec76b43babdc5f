"""Metrics against hand-computed values and against the reference libraries called directly."""

from __future__ import annotations

import math
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
