"""The demo's report: tables, plots and example generations from the recipe's stage results."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HEADLINE = {
    "vqav2": "vqa_accuracy",
    "msrvttqa": "top1",
    "hateful_memes": "roc_auc",
    "imagenet": "top1",
    "coco": "cider",
    "shapesworld_attribute": "top1",
    "shapesworld_binding": "top1",
    "vatex": "cider",
    "youcook2": "cider",
    "ivqa": "ivqa_accuracy",
    "nextqa": "wups0",
    "star": "accuracy",
    "visdial": "ndcg",
    "rareact": "mwap",
}
BASELINE_STAGES = {"blind": "eval_blind", "shuffled": "eval_shuffled"}  # the recipe's media-ablation runs


def _metric(task_result: dict[str, Any], shots: str) -> float | None:
    summary = task_result["shots"].get(shots)
    return None if summary is None else summary["mean"][HEADLINE[task_result["task"]]]


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def _baselines(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each media-ablation baseline's per-task results; empty for a run recorded before that baseline existed."""
    return {name: results.get(stage, {}).get("tasks", {}) for name, stage in BASELINE_STAGES.items()}


def _same_shots(result: dict[str, Any] | None, metric: str) -> str:
    """A baseline's ``metric`` at each of its own shot counts (``"20.7 / 30.1"``); ``–`` where it was not run."""
    if result is None:
        return "–"
    return " / ".join(_fmt(result["shots"][s]["mean"].get(metric)) for s in sorted(result["shots"], key=int))


def _baseline_headers(baselines: dict[str, Any]) -> list[str]:
    return [f"{name} (same shots)" for name in baselines]


@dataclass(frozen=True)
class Targets:
    """A preset's targets; None reports the measurement without a bar. Scores are at 4 shots unless named."""

    caption_gap: float | None = None  # held-out caption NLL, shuffled minus right images (nats/token)
    vqa_over_baseline: float | None = None
    imagenet_top1: float | None = None
    cider_0shot_over_baseline: float | None = None
    attribute_over_0shot: float | None = None
    video_over_baseline: float | None = None
    memes_auc: float | None = None  # best shot count
    binding_8shot: float | None = None


def targets(results: dict[str, Any], goals: Targets) -> list[tuple[str, str, bool | None]]:
    """(what, measured, met?) for each target; met is None where the preset only reports it.

    A "≥ baseline + X" target is measured against the higher of the blind and shuffled baselines: a model
    can beat a blanked image merely because blank input is odd to it, and a shuffled one merely by chance.
    """
    ours, baselines = results["eval"]["tasks"], _baselines(results)

    def at(table, task, shots):
        return _metric(table[task], shots) if task in table else None

    def goal(what: str, value: float | None) -> str:
        """``what ≥ value``, or just ``what`` where the preset only reports it."""
        return what if value is None else f"{what} ≥ {value:g}"

    def met(ok: bool, value: float | None) -> bool | None:
        return None if value is None else ok

    rows = []

    def at_least(what: str, value: float | None, bar: float | None) -> None:
        """A row for ``value ≥ bar``, judged where the preset sets a bar; nothing where it was not measured."""
        if value is not None:
            rows.append((goal(what, bar), f"{value:.1f}", met(value >= (bar or 0), bar)))

    heldout = results.get("flamingo", {}).get("heldout")
    if heldout is not None:
        gap = heldout["vision/gap_shuffled"]
        rows.append(
            (
                goal("caption-loss gap vs shuffled images (nats)", goals.caption_gap),
                f"{gap:.2f} (vs blank {heldout['vision/gap_blank']:.2f}; NLL {heldout['vision/nll']:.2f})",
                met(gap >= (goals.caption_gap or 0), goals.caption_gap),
            )
        )
    for task, shots, margin in (
        ("vqav2", "4", goals.vqa_over_baseline),
        ("coco", "0", goals.cider_0shot_over_baseline),
        ("msrvttqa", "4", goals.video_over_baseline),
    ):
        a = at(ours, task, shots)
        base = {name: v for name, table in baselines.items() if (v := at(table, task, shots)) is not None}
        if a is None or not base:
            continue
        best = max(base.values())
        which, named = " / ".join(base), " / ".join(f"{name} {v:.1f}" for name, v in base.items())
        if len(base) > 1:
            which, named = f"best of {which}", f"best of {named}"
        what = f"{task} {shots}-shot vs {which}" + ("" if margin is None else f" ≥ +{margin:g}")
        rows.append((what, f"{a:.1f} vs {named} ({a - best:+.1f})", met(a >= best + (margin or 0), margin)))
    at_least("image folder 4-shot top-1", at(ours, "imagenet", "4"), goals.imagenet_top1)
    a4, a0 = at(ours, "shapesworld_attribute", "4"), at(ours, "shapesworld_attribute", "0")
    if a4 is not None and a0 is not None:
        rows.append(
            (
                "Attribute 4-shot vs 0-shot"
                + ("" if goals.attribute_over_0shot is None else f" ≥ +{goals.attribute_over_0shot:g}"),
                f"{a4:.1f} vs {a0:.1f} ({a4 - a0:+.1f})",
                met(a4 >= a0 + (goals.attribute_over_0shot or 0), goals.attribute_over_0shot),
            )
        )
    auc = max(
        (v for s in ours.get("hateful_memes", {}).get("shots", {}) if (v := at(ours, "hateful_memes", s)) is not None),
        default=None,
    )
    at_least("memes ROC-AUC (best shot count)", auc, goals.memes_auc)
    at_least("Binding 8-shot top-1", at(ours, "shapesworld_binding", "8"), goals.binding_8shot)
    return rows


def _plots(out: Path, results: dict[str, Any]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    metrics_path = out / "train" / "metrics.jsonl"
    if metrics_path.is_file():
        records = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for key in sorted({k for r in records for k in r if k.startswith("loss/")}):
            points = [(r["step"], r[key]) for r in records if key in r]
            ax.plot(*zip(*points), label=key.removeprefix("loss/"))
        ax.set(xlabel="step", ylabel="NLL per token", title="Flamingo training loss per dataset")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "training_loss.png", dpi=100)
        plt.close(fig)
        written.append("training_loss.png")
    ours, baselines, chance = results["eval"]["tasks"], _baselines(results), results["chance"]["tasks"]
    fig, axes = plt.subplots(1, len(ours), figsize=(3 * len(ours), 3), squeeze=False)
    for ax, (task, result) in zip(axes[0], ours.items()):
        shots = sorted(result["shots"], key=int)
        xs = [int(s) for s in shots]
        ax.plot(xs, [_metric(result, s) for s in shots], "o-", label="Flamingo")
        for (name, table), style in zip(baselines.items(), ("s--", "^-.")):
            if task in table:
                ax.plot(xs, [_metric(table[task], s) for s in shots], style, label=name)
        ax.axhline(chance[task].get(HEADLINE[task], 0.0), color="grey", linestyle=":", label="chance")
        ax.set(title=task, xlabel="shots", ylabel=HEADLINE[task])
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "few_shot.png", dpi=100)
    plt.close(fig)
    written.append("few_shot.png")
    return written


def _by_kind(ours: dict[str, Any], baselines: dict[str, dict[str, Any]], all_shots: list[str]) -> list[str]:
    """The in-context tasks per episode kind (``top1_{kind}``): where the headline number comes from."""
    rows = []
    for task, result in ours.items():
        kinds = sorted(
            {m[len("top1_") :] for s in result["shots"].values() for m in s["mean"] if m.startswith("top1_")}
        )
        for kind in kinds:
            cells = [_fmt(result["shots"].get(s, {}).get("mean", {}).get(f"top1_{kind}")) for s in all_shots]
            cells += [_same_shots(table.get(task), f"top1_{kind}") for table in baselines.values()]
            rows.append(f"| {task} | {kind} | " + " | ".join(cells) + " |")
    if not rows:
        return []
    return [
        "",
        "### In-context tasks by episode kind",
        "",
        "Top-1 accuracy over the episodes of each kind (which attribute the episode is about).",
        "",
        "| task | kind | " + " | ".join([f"{s}-shot" for s in all_shots] + _baseline_headers(baselines)) + " |",
        "|---|---|" + "---|" * (len(all_shots) + len(baselines)),
        *rows,
    ]


def write_report(
    out: Path,
    results: dict[str, Any],
    preset_name: str,
    total_seconds: float,
    process_peak_mib: float,
    goals: Targets = Targets(),
) -> Path:
    """Write ``report.md`` and its plots under ``out``.

    The memory peak is the larger of this process's and those recorded by reused stages. A reused stage
    recorded before stages kept their peak is named, and the peak given as a lower bound, not a wrong figure.
    """
    peak = max([process_peak_mib] + [r.get("peak_rss_mib", 0.0) for r in results.values()])
    unrecorded = [name for name, r in results.items() if r["reused"] and "peak_rss_mib" not in r]
    ours, baselines, chance = results["eval"]["tasks"], _baselines(results), results["chance"]["tasks"]
    all_shots = sorted({s for r in ours.values() for s in r["shots"]}, key=int)
    lines = [f"# ShapesWorld demo report (preset `{preset_name}`)", ""]
    lm = results["lm"]
    go = lm["text_binding_accuracy"] >= lm["text_binding_chance"] + 0.2
    lines += [
        f"End-to-end wall time **{total_seconds / 60:.1f} min**, peak memory "
        f"**{'≥ ' if unrecorded else ''}{peak / 1024:.2f} GiB** "
        "(stages reused from an earlier run count at their original time and memory peak"
        + (f"; not recorded by {', '.join(unrecorded)}" if unrecorded else "")
        + ").",
        "",
        "## Few-shot results",
        "",
        "Headline metric per task (percent; ROC-AUC ×100; CIDEr ×100). *blind*: the same model and prompts with "
        "every image blanked; *shuffled*: the same prompts with each query's image swapped for another query's "
        "(support images kept), a real but wrong image, so the gap to it is the use of the image's content rather "
        "than a reaction to an odd input; *chance*: the most common support answer (open-ended) or a uniform guess "
        "(close-ended).",
        "",
        "| task | metric | "
        + " | ".join([f"{s}-shot" for s in all_shots] + _baseline_headers(baselines))
        + " | chance |",
        "|---|---|" + "---|" * (len(all_shots) + len(baselines)) + "---|",
    ]
    for task, result in ours.items():
        cells = [_fmt(_metric(result, s)) for s in all_shots]
        cells += [_same_shots(table.get(task), HEADLINE[task]) for table in baselines.values()]
        lines.append(
            f"| {task} | {HEADLINE[task]} | " + " | ".join(cells) + f" | {_fmt(chance[task].get(HEADLINE[task]))} |"
        )
    lines += _by_kind(ours, baselines, all_shots)
    lines += ["", "## Targets", "", "| target | measured | met |", "|---|---|---|"]
    verdict = {True: "yes", False: "NO", None: "–"}
    lines += [f"| {what} | {measured} | {verdict[ok]} |" for what, measured, ok in targets(results, goals)]
    lines += [
        "",
        "## LM go/no-go",
        "",
        f"Text-only in-context binding of the pretrained LM: **{lm['text_binding_accuracy']:.0%}** "
        f"(chance {lm['text_binding_chance']:.0%}). "
        + (
            "The LM binds in context, so Flamingo can inherit it."
            if go
            else "**Flagged: the LM does not bind in context, so ShapesWorld-Binding cannot emerge in Flamingo "
            "(its cross-attention sees images; matching and copying is the frozen LM's job).**"
        ),
        "",
    ]
    if "probe" in results["vision"]:  # stages recorded before the probe existed have none
        lines += [
            "## Vision probe",
            "",
            "Linear-probe accuracy of one shape's attributes from the frozen encoder's mean-pooled features "
            "(held-out single-shape scenes). Flamingo cannot learn to name what the encoder does not see.",
            "",
            "| attribute | accuracy | chance |",
            "|---|---|---|",
        ]
        lines += [
            f"| {kind} | {r['accuracy']:.0%} | {r['chance']:.0%} |" for kind, r in results["vision"]["probe"].items()
        ]
        lines += [""]
    lines += ["## Stages", "", "| stage | seconds | notes |", "|---|---|---|"]
    notes = {
        "vision": lambda r: (
            (
                f"pretrained {r['pretrained']}"
                if "pretrained" in r
                else f"contrastive loss {r['loss'][0]:.2f} → {r['loss'][-1]:.2f}"
            )
            + f", {r['parameters']:,} params"
        ),
        "lm": lambda r: (
            (
                f"pretrained {r['pretrained']}"
                if "pretrained" in r
                else f"LM loss {r['loss'][0]:.2f} → {r['loss'][-1]:.2f}"
            )
            + f", {r['parameters']:,} params"
        ),
        "flamingo": lambda r: (
            f"{r['trainable_parameters']:,} trainable / {r['frozen_parameters']:,} frozen params; "
            f"final losses {', '.join(f'{k} {v:.2f}' for k, v in (r['summary']['final_losses'] or {}).items())}"
        ),
        "tokenizer": lambda r: f"vocabulary {r['vocab_size']}",
    }
    for name, result in results.items():
        note = notes[name](result) if name in notes else ""
        lines.append(
            f"| {name} | {result.get('seconds', 0):.1f}{' (reused)' if result.get('reused') else ''} | {note} |"
        )
    plots = _plots(out, results)
    lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    lines += ["", "## Example generations", ""]
    examples_dir = out / "examples"
    examples_dir.mkdir(exist_ok=True)
    for task in ("vqav2", "coco", "shapesworld_attribute"):
        for row in ours.get(task, {}).get("examples", [])[:2]:
            lines.append(
                f"- **{task}**, {row['shots']}-shot, `{row['id']}`: predicted “{row['prediction']}”, "
                f"reference “{row['references'][0] if row['references'] else ''}”"
            )
    image = next((out / "world" / "eval" / "vqav2" / "val2014").glob("*.jpg"), None)
    if image is not None:
        shutil.copy(image, examples_dir / image.name)
        lines += ["", f"![a ShapesWorld evaluation image](examples/{image.name})"]
    lines += ["", "## Try it", "", "```bash", query_command(out), "```", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


def query_command(out: Path) -> str:
    """``flamingo generate`` on the checkpoint, asking the first VQA test question about its own image."""
    root = out / "world" / "eval" / "vqav2"
    first = json.loads((root / "v2_OpenEnded_mscoco_val2014_questions.json").read_text())["questions"][0]
    image = root / "val2014" / f"COCO_val2014_{first['image_id']:012d}.jpg"
    return (
        f"flamingo generate --model {out / 'checkpoint'} --image {image} "
        f'--prompt "<image>Question: {first["question"]} Answer:"'
    )
