"""Ranking metrics against values computed by hand (VisDial NDCG and retrieval metrics, RareAct mWAP)."""

from __future__ import annotations

import math

import pytest
import torch

from flamingo_vlm.evaluate.metrics.ranking import (
    RareActRow,
    accuracy_by_group,
    ndcg,
    rareact_mwap,
    retrieval_metrics,
    scores_to_ranks,
)


def test_scores_to_ranks_breaks_ties_by_candidate_order() -> None:
    assert scores_to_ranks(torch.tensor([[1.0, 1.0, 0.0], [0.0, 2.0, 1.0]])).tolist() == [[1, 2, 3], [3, 1, 2]]


def test_retrieval_metrics_by_hand() -> None:
    scores = -torch.arange(12.0).expand(4, 12)  # candidate j has rank j + 1
    out = retrieval_metrics(scores, [0, 1, 6, 11])  # ground truth ranked 1, 2, 7, 12
    assert out["r@1"] == pytest.approx(1 / 4) and out["r@5"] == pytest.approx(2 / 4)
    assert out["r@10"] == pytest.approx(3 / 4) and out["mean_rank"] == pytest.approx(22 / 4)
    assert out["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 7 + 1 / 12) / 4)


def test_ndcg_with_dense_relevance_by_hand() -> None:
    scores = torch.tensor([[0.9, 0.1, 0.5, 0.3], [0.1, 0.9, 0.5, 0.3]])
    relevance = torch.tensor([[0.0, 1.0, 0.5, 0.0], [0.0, 1.0, 0.5, 0.0]])
    # Row 0: k = 2 relevant; the model's top 2 are candidates 0 (0) and 2 (0.5); the ideal top 2 are 1.0, 0.5.
    row0 = (0.5 / math.log2(3)) / (1.0 + 0.5 / math.log2(3))
    assert ndcg(scores, relevance) == pytest.approx((row0 + 1.0) / 2)  # row 1 is ranked ideally
    # Only the top k counts: what is ranked below the number of relevant options does not matter.
    assert ndcg(torch.tensor([[1.0, 0.0, 2.0]]), torch.tensor([[1.0, 0.0, 0.0]])) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="no relevant"):
        ndcg(scores[:1], torch.zeros(1, 4))


def test_rareact_mwap_by_hand() -> None:
    """Groups as compute_score.py forms them, AP weighted by 1 / clips of the same video in a group."""
    pr, lb, pb = ("push", "red"), ("lift", "blue"), ("push", "blue")
    rows = [
        RareActRow("A", pr, 1),  # 0: positive of push red; hard negative of push blue; negative of lift blue
        RareActRow("A", pr, 0),  # 1: negative of push red
        RareActRow("B", pr, 2),  # 2: hard negative of push red
        RareActRow("B", lb, 1),  # 3: positive of lift blue; negative of push red; hard negative of push blue
        RareActRow("C", pb, 3),  # 4: push blue has no positive: not averaged
        RareActRow("D", pr, 0),  # 5, 6: two negatives from one video, weight 1/2 each
        RareActRow("D", pr, 0),
    ]
    scores = [
        {pr: 0.5, lb: 0.1, pb: 0.0},
        {pr: 0.7},
        {pr: 0.6},
        {pr: 0.2, lb: 0.9, pb: 0.0},
        {pb: 0.3},
        {pr: 0.8},
        {pr: 0.1},
    ]
    # push red ranks: 5 (neg, w .5), 1 (neg, 1), 2 (hard neg, 1), 0 (pos, 1), 3, 6: AP = 1 / 3.5; lift blue: AP 1.
    out = rareact_mwap(rows, scores)
    assert out["num_classes"] == 2
    assert out["mwap"] == pytest.approx((1 / 3.5 + 1.0) / 2)
    with pytest.raises(ValueError, match="no score"):
        rareact_mwap(rows, [{pr: 0.5}] + scores[1:])
    with pytest.raises(ValueError, match="annotation"):
        rareact_mwap([RareActRow("A", pr, 7)], [{pr: 0.0}])


def test_accuracy_by_group() -> None:
    out = accuracy_by_group([True, False, True, True], ["Sequence", "Sequence", "Interaction", "Prediction"])
    assert out == {"": 0.75, "Interaction": 1.0, "Prediction": 1.0, "Sequence": 0.5}
