"""Metrics of ranking tasks: VisDial's retrieval metrics and NDCG, RareAct's mWAP.

Each follows its benchmark's official code, so numbers compare with published ones:

- VisDial (``visdialch/metrics.py`` of batra-mlp-lab/visdial-challenge-starter-pytorch): the rank of
  the ground-truth answer among the 100 options gives R@1/5/10, mean rank and MRR (over every round);
  NDCG on the rounds with dense annotations takes ``k`` = the number of options with non-zero relevance,
  and compares the relevance of the model's top ``k`` with that of the best possible top ``k``, each
  discounted by ``log2(position + 1)``.
- RareAct (``compute_score.py`` of antoine77340/RareAct): per (verb, noun) class with at least one
  positive clip, scikit-learn's average precision of the class's score over its positives, negatives and
  hard negatives, each clip weighted by 1 / (the number of clips of its video in its group), then the
  mean over classes (mWAP).

Ties are broken by candidate order (a stable sort), where the official code leaves them to its sort.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import torch


def scores_to_ranks(scores: torch.Tensor) -> torch.Tensor:
    """1-based rank of every candidate, ``(n, c)`` scores → ``(n, c)`` ranks (1 = highest score)."""
    order = scores.argsort(dim=-1, descending=True, stable=True)  # (n, c): candidate at each position
    ranks = torch.empty_like(order)
    positions = torch.arange(1, scores.shape[-1] + 1, device=scores.device).expand_as(order)
    return ranks.scatter_(-1, order, positions)


def retrieval_metrics(scores: torch.Tensor, targets: Sequence[int]) -> dict[str, float]:
    """VisDial's sparse metrics from ``(n, c)`` scores and each row's ground-truth index.

    ``r@k`` and ``mrr`` are fractions in [0, 1], ``mean_rank`` in [1, c], as the official code returns them.
    """
    if scores.ndim != 2 or scores.shape[0] != len(targets) or not len(targets):
        raise ValueError(f"scores must be (n={len(targets)} > 0, num_candidates), got {tuple(scores.shape)}")
    gt = torch.as_tensor(list(targets), dtype=torch.long)
    ranks = scores_to_ranks(scores)[torch.arange(len(gt)), gt].float()  # (n,)
    return {
        "r@1": (ranks <= 1).float().mean().item(),
        "r@5": (ranks <= 5).float().mean().item(),
        "r@10": (ranks <= 10).float().mean().item(),
        "mean_rank": ranks.mean().item(),
        "mrr": ranks.reciprocal().mean().item(),
    }


def _dcg(relevance_in_order: torch.Tensor) -> float:
    discounts = torch.log2(torch.arange(len(relevance_in_order), dtype=torch.float64) + 2)
    return float((relevance_in_order.double() / discounts).sum())


def ndcg(scores: torch.Tensor, relevance: torch.Tensor) -> float:
    """Mean NDCG over rows, VisDial's definition: DCG of the model's top ``k`` over the ideal top ``k``,
    where ``k`` is the row's number of candidates with non-zero relevance. Rows with none are an error
    (the official code would divide by zero)."""
    if scores.shape != relevance.shape or scores.ndim != 2 or not len(scores):
        raise ValueError(f"scores {tuple(scores.shape)} and relevance {tuple(relevance.shape)} must be equal (n, c)")
    values = []
    for row_scores, row_relevance in zip(scores, relevance):
        k = int((row_relevance != 0).sum())
        if k == 0:
            raise ValueError("an NDCG row has no relevant candidate")
        ranked = row_scores.argsort(descending=True, stable=True)[:k]
        ideal = row_relevance.sort(descending=True).values[:k]
        values.append(_dcg(row_relevance[ranked]) / _dcg(ideal))
    return sum(values) / len(values)


# ---------------------------------------------------------------------------------------------------------------------
# RareAct


POSITIVE, NEGATIVE = 1, 0  # RareAct labels; 2, 3, 4 are hard negatives (only verb / only noun / not applied)
RAREACT_LABELS = (0, 1, 2, 3, 4)


@dataclass(frozen=True)
class RareActRow:
    """One row of ``rareact.csv``: a clip of ``video_id`` annotated for ``action`` = (verb, noun)."""

    video_id: str
    action: tuple[str, str]
    label: int


def _groups(rows: Sequence[RareActRow]) -> dict[tuple[str, str], dict[str, list[int]]]:
    """Row indices of each action's positives, negatives and hard negatives, as ``compute_score.py`` forms them.

    A row positive for (v, n) is also a hard negative of every other action sharing exactly one of v and n,
    and a negative of every action sharing neither.
    """
    groups: dict[tuple[str, str], dict[str, list[int]]] = {}
    for row in rows:
        groups.setdefault(row.action, {"positive": [], "negative": [], "hard negative": []})
    for i, row in enumerate(rows):
        if row.label not in RAREACT_LABELS:
            raise ValueError(f"RareAct annotation must be one of {RAREACT_LABELS}, got {row.label}")
        verb, noun = row.action
        if row.label == NEGATIVE:
            groups[row.action]["negative"].append(i)
        elif row.label == POSITIVE:
            groups[row.action]["positive"].append(i)
            for (v, n), group in groups.items():
                if (v == verb) != (n == noun):
                    group["hard negative"].append(i)
                elif v != verb and n != noun:
                    group["negative"].append(i)
        else:
            groups[row.action]["hard negative"].append(i)
    return groups


def _per_video_weights(videos: Sequence[Hashable]) -> list[float]:
    counts = Counter(videos)
    return [1.0 / counts[v] for v in videos]


def rareact_mwap(rows: Sequence[RareActRow], scores: Sequence[dict[tuple[str, str], float]]) -> dict[str, float]:
    """mWAP (fraction in [0, 1]) and the number of classes it averages.

    ``scores[i][action]`` is the model's score of ``action`` on row i's clip; every action whose group
    holds row i must be present (a positive row needs every action, another row its own).
    """
    from sklearn.metrics import average_precision_score

    if len(rows) != len(scores):
        raise ValueError(f"{len(rows)} rows but {len(scores)} score dicts")
    per_class = []
    for action, group in _groups(rows).items():
        if not group["positive"]:
            continue
        indices = group["positive"] + group["negative"] + group["hard negative"]
        try:
            values = [scores[i][action] for i in indices]
        except KeyError as err:
            raise ValueError(f"no score of action {action} for a clip in its group") from err
        weights = []
        for name in ("positive", "negative", "hard negative"):
            weights += _per_video_weights([rows[i].video_id for i in group[name]])
        labels = [1] * len(group["positive"]) + [0] * (len(indices) - len(group["positive"]))
        per_class.append(float(average_precision_score(labels, values, sample_weight=weights)))
    if not per_class:
        raise ValueError("mWAP needs at least one action with a positive clip")
    return {"mwap": sum(per_class) / len(per_class), "num_classes": float(len(per_class))}


def accuracy_by_group(correct: Sequence[bool], groups: Sequence[str]) -> dict[str, float]:
    """Accuracy (fraction) overall under ``""`` and per group name (STAR's question types)."""
    if len(correct) != len(groups) or not correct:
        raise ValueError("need one group per prediction, and at least one prediction")
    by_group: dict[str, list[bool]] = defaultdict(list)
    for hit, group in zip(correct, groups):
        by_group[group].append(hit)
    out = {"": sum(correct) / len(correct)}
    out.update({g: sum(hits) / len(hits) for g, hits in sorted(by_group.items())})
    return out
