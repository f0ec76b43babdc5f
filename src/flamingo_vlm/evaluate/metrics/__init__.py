"""Benchmark metrics, each matching the official tool of its benchmark."""

from flamingo_vlm.evaluate.metrics.captioning import caption_metrics
from flamingo_vlm.evaluate.metrics.classification import roc_auc, topk_accuracy
from flamingo_vlm.evaluate.metrics.vqa import mean_vqa_accuracy, normalize_vqa_answer, vqa_accuracy

__all__ = ["caption_metrics", "mean_vqa_accuracy", "normalize_vqa_answer", "roc_auc", "topk_accuracy", "vqa_accuracy"]
