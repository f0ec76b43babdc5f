"""Evaluation kill campaign: ``flamingo eval`` SIGKILLed at seeded random moments, then resumed with ``--resume``.

One row, **eval: kill -9 + resume**. A tiny Flamingo evaluates two tasks of the tiny ShapesWorld (VQAv2,
generated with beam search; HatefulMemes, ranked with two support orderings per query), 0 and 2 shots, two
trials. Each case starts a fresh evaluation and kills it once or twice — at a random moment of the whole run
(start-up and loading included), after a random number of logged predictions, or once every prediction is
logged (while the results are scored and written) — resuming after each kill, then resumes it to the end.
Checked:

- after every kill, ``results.json`` and ``predictions.jsonl`` are absent or complete (each equal to the
  uninterrupted run's), never partial;
- the finished run's ``results.json`` and ``predictions.jsonl`` are byte-identical to an uninterrupted run's;
- the log holds each prediction once (a prediction torn by the kill is cut and made again, never duplicated).

A kill inside a log line's write is too brief to hit by timing, so after half the kills that leave a complete
log, the campaign tears its last line in half itself (``torn_simulated``): the state such a kill leaves.

Processes are forks of the campaign running ``cli.main(argv)``, one thread each, as in ``faults_kill``.

    python benchmarks/faults.py --campaign eval-kill [--seed 0] [--scale 1.0]
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from faults_common import TINY_FLAMINGO, Outcome, Row, scratch_dir, write_tiny_parts  # noqa: E402
from faults_kill import _alive, _build_in_fork, _cli, _fork, _reap  # noqa: E402

CAMPAIGN = "eval-kill"
CORPUS = [
    "Question: what colour is the square? Answer: red",
    "Question: how many circles are there? Answer: two",
    "a meme with written text on it? yes",
    "Output: a blue triangle left of a green star.",
]
TASKS = ("vqav2", "hateful_memes")
OUTPUTS = ("results.json", "predictions.jsonl")


def _make_tiny_eval(root: Path) -> int:
    """A tiny Flamingo (gates open, so images matter) and the tiny world's VQAv2 and HatefulMemes sets."""
    import torch

    from flamingo_vlm import Flamingo
    from flamingo_vlm.world.benchmarks import BENCHMARKS
    from flamingo_vlm.world.generate import WorldConfig
    from flamingo_vlm.world.scene import RenderConfig

    torch.manual_seed(0)
    write_tiny_parts(root, CORPUS * 4, vocab_size=300, max_positions=256)
    model = Flamingo.from_components(
        str(root / "lm"),
        str(root / "vision"),
        **TINY_FLAMINGO,
    )
    with torch.no_grad():
        for block in model.language_model.gated_xattn:
            block.attn_gate.fill_(0.5)
            block.ff_gate.fill_(0.5)
    model.save_pretrained(root / "model")
    world = WorldConfig(preset="tiny", render=RenderConfig(image_size=32))
    for task in TASKS:
        writer, splits = BENCHMARKS[task]
        writer(root / "data" / task, world.evaluation_seed, world.sizes.split_sizes(task, splits), world.render)
    return 0


def _eval_argv(root: Path, out: Path, resume: bool) -> list[str]:
    argv = ["eval", "--model", str(root / "model"), "--task", *TASKS]
    argv += ["--data-root", *(str(root / "data" / t) for t in TASKS), "--output", str(out)]
    argv += ["--shots", "0", "2", "--trials", "2", "--batch-size", "2", "--num-beams", "2", "--ensembles", "2"]
    argv += ["--template", "hateful_memes=<image>{text}? {answer}<|endofchunk|>", "--vqa-normalization"]
    argv += ["normalize_both", "--no-progress", "--device", "cpu", "--cache-dir", str(root / "cache")]
    return argv + (["--resume"] if resume else [])


def _logged(out: Path) -> int:
    """Complete lines in the prediction logs."""
    with contextlib.suppress(FileNotFoundError):
        return sum(p.read_bytes().count(b"\n") for p in (out / "prediction_logs").glob("rank-*.jsonl"))
    return 0


def _torn(out: Path) -> int:
    """Logs that end in a torn line (no newline): the kill landed inside a write."""
    with contextlib.suppress(FileNotFoundError):
        data = [p.read_bytes() for p in (out / "prediction_logs").glob("rank-*.jsonl")]
        return sum(bool(d) and not d.endswith(b"\n") for d in data)
    return 0


def _tear_last_line(out: Path) -> None:
    """Cut the last line of the longest log in half, as a kill between its first and last byte would."""
    path = max((out / "prediction_logs").glob("rank-*.jsonl"), key=lambda p: p.stat().st_size)
    data = path.read_bytes()
    start = data.rstrip(b"\n").rfind(b"\n") + 1
    os.truncate(path, start + (len(data) - start) // 2)


def _kill_at(pid: int, out: Path, rng: random.Random, timing: dict[str, float]) -> tuple[bool, str]:
    """Wait for a seeded moment and SIGKILL ``pid``; (killed, where it was aimed)."""
    kind = rng.choice(["anywhere", "predicting", "scoring"])
    start = time.monotonic()
    deadline = start + 4 * timing["total"] + 10
    if kind == "anywhere":
        end = start + rng.uniform(0, timing["total"])
    else:
        target = rng.randrange(1, timing["lines"]) if kind == "predicting" else timing["lines"]
        target += _logged(out) if kind == "predicting" else 0  # (a resumed run starts from the lines it finds)
        target = min(target, timing["lines"])
        while time.monotonic() < deadline and _alive(pid) and _logged(out) < target:
            time.sleep(0.0005)
        end = time.monotonic() + (rng.uniform(0, timing["tail"]) if kind == "scoring" else 0)
    while time.monotonic() < end and _alive(pid):
        time.sleep(0.0005)
    if pid in _alive.exited:
        return False, kind
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return True, kind


def eval_kill_row(root: Path, work: Path, seed: int, cases: int) -> Row:
    row = Row(CAMPAIGN, "eval: kill -9 + resume")
    rng = random.Random(seed)
    reference = work / "reference"
    start = time.monotonic()
    pid = _fork(_cli(_eval_argv(root, reference, resume=False)), work / "reference.log")
    while _alive(pid):
        time.sleep(0.001)
    total = time.monotonic() - start
    if _alive.exited.pop(pid) != 0:
        raise RuntimeError(f"the uninterrupted evaluation failed:\n{(work / 'reference.log').read_text()[-3000:]}")
    expected = {name: (reference / name).read_bytes() for name in OUTPUTS}
    lines = _logged(reference)
    timing = {"total": total, "lines": lines, "tail": 0.3 * total}
    counts = dict(kills=0, resumes=0, runs_matched=0, partial_outputs_visible=0, torn_lines=0, torn_simulated=0)
    counts["duplicated_lines"] = 0
    counts.update(aimed_anywhere=0, aimed_predicting=0, aimed_scoring=0)
    for case in range(cases):
        out, log = work / f"case-{case}", work / f"case-{case}.log"
        killed_any = False
        for attempt in range(1 + (rng.random() < 0.5)):  # half the cases: a second kill, during the resume
            pid = _fork(_cli(_eval_argv(root, out, resume=attempt > 0)), log)
            killed, kind = _kill_at(pid, out, rng, timing)
            if not killed:
                break
            killed_any = True
            counts["kills"] += 1
            counts[f"aimed_{kind}"] += 1
            torn = _torn(out)
            if not torn and _logged(out) and rng.random() < 0.5:
                _tear_last_line(out)  # the state a kill inside a write leaves (too brief to hit by timing)
                counts["torn_simulated"] += 1
            counts["torn_lines"] += torn
            partial = [n for n in OUTPUTS if (out / n).exists() and (out / n).read_bytes() != expected[n]]
            counts["partial_outputs_visible"] += len(partial)
            row.add(f"case {case} kill {attempt} ({kind}): partial outputs visible {partial}", Outcome(not partial, 1))
        if not killed_any:
            row.add(f"case {case}: finished before its kill", Outcome(1, 1))
        code = _reap(_fork(_cli(_eval_argv(root, out, resume=True)), log), timeout=4 * total + 60)
        counts["resumes"] += 1
        if code != 0:
            row.add(
                f"case {case}: final resume", None, hung=code is None, error=None if code is None else f"exit {code}"
            )
            continue
        differ = [n for n in OUTPUTS if (out / n).read_bytes() != expected[n]]
        keys = [
            (r["task"], r["shots"], r["seed"], r["index"])
            for p in (out / "prediction_logs").glob("rank-*.jsonl")
            for r in map(json.loads, p.read_bytes().splitlines())
        ]
        duplicated = len(keys) - len(set(keys))
        counts["duplicated_lines"] += duplicated
        problems = [f"{n} differs from the uninterrupted run's" for n in differ]
        problems += [f"{duplicated} predictions logged twice"] if duplicated else []
        counts["runs_matched"] += not problems
        row.add(f"case {case}: resumed to the end; " + "; ".join(problems), Outcome(not problems, 1))
    row.extra.update(counts, predictions=lines, run_seconds=round(total, 1))
    return row


def run(seed: int, scale: float = 1.0, workdir: Path | None = None) -> list[Row]:
    """Scale 1.0: 20 cases, about 30 kills (each case killed once or twice, then resumed to the end)."""
    with scratch_dir(workdir) as workdir:
        root = workdir / "tiny-eval"
        root.mkdir(parents=True)
        import flamingo_vlm.recipes.evaluate  # noqa: F401 - imported once here: forks start in milliseconds
        from flamingo_vlm.cli import build_parser

        build_parser()
        _build_in_fork(lambda: _make_tiny_eval(root), workdir / "tiny-eval.log", "the tiny evaluation")
        (workdir / "eval-kill").mkdir()
        return [eval_kill_row(root, workdir / "eval-kill", seed, max(2, round(20 * scale)))]
