"""Writing a run's results: ``results.json``, ``predictions.jsonl`` and a markdown summary table."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from flamingo_vlm.io import write_text


def write_results(output_dir: str | Path, results: Mapping[str, Any], predictions: Iterable[Mapping[str, Any]]) -> Path:
    """Write both files into ``output_dir`` and return the path of ``results.json``.

    Each file is written whole under a temporary name and renamed, ``results.json`` last: a reader (or a run
    killed while writing) never sees a partial one.
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in predictions), out / "predictions.jsonl")
    path = out / "results.json"
    write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", path)
    return path


def markdown_table(task_results: Iterable[Mapping[str, Any]]) -> str:
    """One row per task and metric, one column per shot count: ``mean ± std`` over trials.

    Bad inputs are listed under the table, so a reader sees when a number covers fewer records.
    """
    task_results = list(task_results)
    shots = sorted({int(s) for r in task_results for s in r["shots"]})
    lines = [
        "| task | metric | " + " | ".join(f"{s}-shot" for s in shots) + " |",
        "|---|---|" + "---:|" * len(shots),
    ]
    notes = []
    for r in task_results:
        first = next(iter(r["shots"].values()))
        for metric in first["mean"]:
            cells = []
            for s in shots:
                summary = r["shots"].get(str(s))
                cells.append(f"{summary['mean'][metric]:.2f} ± {summary['std'][metric]:.2f}" if summary else "")
            lines.append(f"| {r['task']} | {metric} | " + " | ".join(cells) + " |")
        for split, counts in r["bad_inputs"].items():
            if counts:
                detail = ", ".join(f"{k}={v}" for k, v in sorted(counts.items()))
                notes.append(f"- {r['task']} ({split} split): skipped {detail}")
        if r["num_evaluated"] < r["num_queries"]:
            notes.append(f"- {r['task']}: {r['num_evaluated']} of {r['num_queries']} eval examples scored")
    if notes:
        lines += ["", "Bad inputs (not scored):", *notes]
    return "\n".join(lines)
