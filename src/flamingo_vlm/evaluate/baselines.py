"""The chance baseline of a few-shot task: what knowing the task, but not the image, gets."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from flamingo_vlm.evaluate.tasks import Example, Prediction, TaskSpec, get_task


def chance_baseline(task: str, root: Path, max_examples: int | None = None) -> dict[str, float]:
    """The most common support answer for open-ended tasks (scored by the task's own metric), a uniform
    guess among the candidates for close-ended ones (ROC-AUC 50 for a binary score)."""
    spec = get_task(task)
    split = spec.reader(root, spec.eval_split)
    examples = split.examples[:max_examples]
    if task in RANDOM_RANKING:
        return random_ranking(spec, examples, split.candidates or [])
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


RANDOM_RANKING = ("star", "visdial", "rareact")  # metrics of a whole ranking (NDCG, mWAP): estimated by sampling


def random_ranking(
    spec: TaskSpec, examples: Sequence[Example], candidates: Sequence[str], draws: int = 20, seed: int = 0
) -> dict[str, float]:
    """The task's own metrics for uniformly random candidate scores, averaged over ``draws`` seeded draws."""
    rng = random.Random(seed)
    totals: Counter = Counter()
    for _ in range(draws):
        predictions = [Prediction("", tuple(rng.random() for _ in e.candidates)) for e in examples]
        for name, value in spec.scorer(examples, predictions, candidates).items():
            totals[name] += value / draws
    return dict(totals)
