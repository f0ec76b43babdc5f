"""The chance baseline of a few-shot task: what knowing the task, but not the image, gets."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from flamingo_vlm.evaluate.tasks import Prediction, get_task


def chance_baseline(task: str, root: Path, max_examples: int | None = None) -> dict[str, float]:
    """The most common support answer for open-ended tasks (scored by the task's own metric), a uniform
    guess among the candidates for close-ended ones (ROC-AUC 50 for a binary score)."""
    spec = get_task(task)
    split = spec.reader(root, spec.eval_split)
    examples = split.examples[:max_examples]
    if spec.mode == "rank":
        if task == "hateful_memes":
            return {"roc_auc": 50.0}
        n = [len(e.candidates or split.candidates) for e in examples]
        top1 = {"top1": 100 * sum(1 / k for k in n) / len(n)}
        return top1 | ({"top5": 100 * sum(min(5, k) / k for k in n) / len(n)} if task == "imagenet" else {})
    support = (
        [s for e in examples for s in e.support] if spec.episodic else spec.reader(root, spec.support_split).examples
    )
    majority = Counter(e.answer for e in support).most_common(1)[0][0]
    return spec.scorer(examples, [Prediction(majority)] * len(examples), split.candidates or [])
