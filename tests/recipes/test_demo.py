"""`flamingo demo --preset tiny`: the whole recipe runs, writes its report, and reuses finished stages."""

import json
import shlex
from pathlib import Path

from flamingo_vlm import Flamingo
from flamingo_vlm.cli import main
from flamingo_vlm.recipes.demo import EVAL_TASKS
from flamingo_vlm.recipes.demo_report import HEADLINE, write_report


def test_tiny_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--preset", "tiny", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "flamingo generate --model" in printed and str(out / "checkpoint") in printed
    # The printed command runs as it is: an existing test image and a question the world asks about it.
    command = shlex.split(printed.split("query it:\n")[1].strip())
    assert command[:2] == ["flamingo", "generate"] and Path(command[command.index("--image") + 1]).is_file()
    assert main(command[1:] + ["--device", "cpu", "--max-new-tokens", "3"]) == 0
    assert capsys.readouterr().out.endswith("\n")  # one printed line: the answer (a tiny model may say nothing)

    report = (out / "report.md").read_text()
    for section in (
        "## Few-shot results",
        "### In-context tasks by episode kind",
        "## Targets",
        "## LM go/no-go",
        "## Vision probe",
        "## Stages",
        "## Plots",
        "## Example generations",
        "## Try it",
    ):
        assert section in report
    for task in EVAL_TASKS:
        assert f"| {task} |" in report
    for plot in ("training_loss.png", "few_shot.png"):
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    stages = {p.stem: json.loads(p.read_text()) for p in (out / "stages").glob("*.json")}
    assert set(stages) == {
        "world",
        "tokenizer",
        "vision",
        "lm",
        "flamingo",
        "eval",
        "eval_blind",
        "eval_shuffled",
        "chance",
    }
    assert 0.0 <= stages["lm"]["text_binding_accuracy"] <= 1.0
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in stages["vision"]["probe"].values())
    for name, ablation in (("eval", "none"), ("eval_blind", "blank"), ("eval_shuffled", "shuffle")):
        assert set(stages[name]["tasks"]) == set(EVAL_TASKS)
        assert {r["media_ablation"] for r in stages[name]["tasks"].values()} == {ablation}
    assert "| blind (same shots) | shuffled (same shots) | chance |" in report
    assert "*shuffled*: the same prompts with each query's image swapped" in report

    # A run recorded before the shuffled baseline existed still gets a report: its shuffled cells are empty.
    earlier = {name: {**record, "reused": True} for name, record in stages.items() if name != "eval_shuffled"}
    old_report = write_report(out, earlier, "tiny", 1.0, 1.0).read_text()
    for task in EVAL_TASKS:
        row = next(line for line in old_report.splitlines() if line.startswith(f"| {task} | {HEADLINE[task]} |"))
        blind_cell, shuffled_cell = row.split("|")[-4:-2]
        assert shuffled_cell.strip() == "–" and blind_cell.strip() != "–"
    model = Flamingo.from_pretrained(out / "checkpoint")  # self-contained and loadable
    assert model.config.lm == "lm"

    assert all(s["peak_rss_mib"] > 0 for s in stages.values())

    # A re-run reuses every finished stage instead of redoing it, and still reports the memory peak
    # recorded by a reused stage (here made larger than this process's own) rather than just its own.
    lm_record = out / "stages" / "lm.json"
    lm_record.write_text(json.dumps({**stages["lm"], "peak_rss_mib": 64 * 1024.0}))
    before = (out / "stages" / "flamingo.json").stat().st_mtime_ns
    assert main(["demo", "--preset", "tiny", "--out", str(out), "--no-progress"]) == 0
    assert (out / "stages" / "flamingo.json").stat().st_mtime_ns == before
    report = (out / "report.md").read_text()
    assert "(reused)" in report
    assert "peak memory **64.00 GiB**" in report

    # A stage recorded before stages kept their peak: the report gives a lower bound and names it.
    record = {k: v for k, v in stages["vision"].items() if k != "peak_rss_mib"}
    (out / "stages" / "vision.json").write_text(json.dumps(record))
    assert main(["demo", "--preset", "tiny", "--out", str(out), "--no-progress"]) == 0
    report = (out / "report.md").read_text()
    assert "peak memory **≥ 64.00 GiB**" in report and "not recorded by vision" in report
