"""The report's targets: a "≥ baseline + X" target is measured against the stronger media ablation."""

from __future__ import annotations

from flamingo_vlm.recipes.demo_report import Targets, targets

GOALS = Targets(vqa_over_baseline=50)


def _run(vqa_4shot: float) -> dict:
    """Per-task results as the evaluation stages record them, reduced to what ``targets`` reads."""
    return {"tasks": {"vqav2": {"task": "vqav2", "shots": {"4": {"mean": {"vqa_accuracy": vqa_4shot}}}}}}


def test_the_baseline_is_the_better_of_blind_and_shuffled() -> None:
    results = {"eval": _run(44.7), "eval_blind": _run(20.7), "eval_shuffled": _run(30.1)}
    assert targets(results, GOALS) == [
        ("vqav2 4-shot vs best of blind / shuffled ≥ +50", "44.7 vs best of blind 20.7 / shuffled 30.1 (+14.6)", False)
    ]
    results["eval_shuffled"] = _run(-10.0)  # the higher one counts, whichever it is
    assert targets(results, GOALS)[0][1] == "44.7 vs best of blind 20.7 / shuffled -10.0 (+24.0)"


def test_a_run_without_the_shuffled_baseline_is_measured_against_blind() -> None:
    [(what, measured, met)] = targets({"eval": _run(80.0), "eval_blind": _run(20.0)}, GOALS)
    assert (what, measured, met) == ("vqav2 4-shot vs blind ≥ +50", "80.0 vs blind 20.0 (+60.0)", True)


def test_a_target_without_a_bar_is_reported_not_judged() -> None:
    results = {"eval": _run(44.7), "eval_blind": _run(20.7)}
    [(what, measured, met)] = targets(results, Targets())
    assert what == "vqav2 4-shot vs blind" and met is None
