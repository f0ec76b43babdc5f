"""Metrics of close-ended tasks, computed from candidate log-likelihoods."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def topk_accuracy(scores: torch.Tensor, labels: Sequence[int], k: int = 1) -> float:
    """Fraction of rows whose label is among the ``k`` highest-scoring candidates.

    ``scores`` is ``(n, num_classes)``; ties are broken by ``torch.topk`` (lowest index first).
    """
    if scores.ndim != 2 or scores.shape[0] != len(labels):
        raise ValueError(f"scores must be (n={len(labels)}, num_classes), got {tuple(scores.shape)}")
    k = min(k, scores.shape[1])
    top = scores.topk(k, dim=1).indices  # (n, k)
    target = torch.as_tensor(list(labels), dtype=torch.long).unsqueeze(1)  # (n, 1)
    return (top == target).any(dim=1).float().mean().item()


def roc_auc(labels: Sequence[int], positive_scores: Sequence[float]) -> float:
    """Area under the ROC curve (scikit-learn), the HatefulMemes metric.

    Undefined when only one class is present; we raise rather than return a misleading number.
    """
    from sklearn.metrics import roc_auc_score

    if len(set(labels)) < 2:
        raise ValueError("ROC-AUC needs both positive and negative examples")
    return float(roc_auc_score(list(labels), list(positive_scores)))
