"""iVQA accuracy (Yang et al., "Just Ask", ICCV 2021): ``min(#annotators who gave the answer / 2, 1)``.

Each iVQA question has 5 human answers; an answer given by two or more of them counts fully, one given
by a single annotator counts half.  The official evaluation (antoyang/just-ask) matches answers as
vocabulary entries, i.e. exact strings of the cleaned annotations.  A generative model writes free text,
so both sides here pass through the VQA answer normalisation (lower case, punctuation, articles, number
words; :func:`~flamingo_vlm.evaluate.metrics.vqa.normalize_vqa_answer`): "The Knife." matches "knife",
which the classifier's vocabulary lookup would have made the same answer anyway.
"""

from __future__ import annotations

from collections.abc import Sequence

from flamingo_vlm.evaluate.metrics.vqa import normalize_vqa_answer

IVQA_MATCHES_FOR_FULL_CREDIT = 2


def ivqa_accuracy(prediction: str, human_answers: Sequence[str]) -> float:
    """``min(#matching human answers / 2, 1)`` after normalising both sides; a fraction in [0, 1]."""
    if not human_answers:
        raise ValueError("ivqa_accuracy needs at least one human answer")
    answer = normalize_vqa_answer(prediction)
    matches = sum(normalize_vqa_answer(h) == answer for h in human_answers)
    return min(matches / IVQA_MATCHES_FOR_FULL_CREDIT, 1.0)
