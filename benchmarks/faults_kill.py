"""Kill campaign: SIGKILL during training and ``flamingo data build-web``, and a full disk during a save.

Three rows:

- **train: kill -9 + resume.** ``flamingo train`` (the tiny CPU config, a checkpoint every step) is killed
  with SIGKILL at seeded random moments — two kills in three aimed inside a checkpoint write (right after its
  temporary directory appears), the rest anywhere, start-up and resume included — and rerun with ``--resume``
  until it finishes. After every kill each checkpoint directory a reader would consider (``step-*``) must
  verify and load; every resume must pick the newest of them (never a torn one); the finished run's weights
  and optimiser state must be bit-identical to an uninterrupted run's, and its ``metrics.jsonl`` the same
  curve, one record per step.
- **train: full disk during a save.** The disk fills midway through one file of the second checkpoint
  (each case a different file). The run must stop with a one-line error naming the disk, leave no
  ``step-*`` for the failed save, keep the previous checkpoint intact, and resume from it.
- **data build-web: kill -9 + rerun.** The builder is killed midway; no ``*.tar`` that a reader would pick
  up may be half-written, and the rerun must write the same shards, byte for byte, as an uninterrupted build.

Every process here is a fork of the campaign (``cli.main(argv)`` in the child, as ``python -m flamingo_vlm``
runs it, minus the interpreter's start): SIGKILL ends it exactly as it would a fresh process, and the
campaign fits many more kills into its time. Children run one thread each, so that the uninterrupted
reference and the killed runs compute alike.

    python benchmarks/faults.py --campaign kill [--seed 0] [--scale 1.0]
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from faults_common import Outcome, Row, run_case, scratch_dir, write_tiny_parts  # noqa: E402

CAMPAIGN = "kill"
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "train" / "tiny-cpu.yaml"
CORPUS = [
    "a red square is above a blue circle.",
    "Question: what colour is the triangle? Answer: green",
    "Output: two yellow stars on a grey background.",
    "How many shapes are there? Answer: three",
]


# ------------------------------------------------------------------------------------ processes


def _fork(fn: Callable[[], int], log: Path) -> int:
    """Run ``fn`` in a forked child whose stdout and stderr go to ``log``; its return value is the exit code."""
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        sys.stdout = io.TextIOWrapper(os.fdopen(1, "wb", buffering=0), write_through=True)
        sys.stderr = io.TextIOWrapper(os.fdopen(2, "wb", buffering=0), write_through=True)
        import logging

        import torch

        logging.root.handlers.clear()  # as in a fresh process (pytest's capture would swallow "resumed from")
        torch.set_num_threads(1)  # as in the uninterrupted reference: same thread count, same sums
        code = fn()
    except BaseException:  # noqa: BLE001 - the child reports through its exit code and log
        import traceback

        traceback.print_exc()
    finally:
        os._exit(code)


def _preload() -> None:
    """Import what the children run once, here: forks then start in milliseconds, not seconds, and the kill
    moments fall in the work, not in the imports. (Imports only: no torch op runs in this process.)"""
    import flamingo_vlm.data.build  # noqa: F401
    import flamingo_vlm.train.build  # noqa: F401
    import flamingo_vlm.train.trainer  # noqa: F401
    from flamingo_vlm.cli import build_parser

    build_parser()


def _cli(argv: list[str]) -> Callable[[], int]:
    def main() -> int:
        from flamingo_vlm.cli import main

        return main(argv)

    return main


def _build_in_fork(make: Callable[[], int], log: Path, what: str) -> None:
    """Build a campaign's tiny parts in a forked child (the parent stays free of its state); raise on failure."""
    if _reap(_fork(make, log), timeout=300) != 0:
        raise RuntimeError(f"building {what} failed: {log.read_text()[-3000:]}")


def _reap(pid: int, timeout: float) -> int | None:
    """The child's exit status (negative: killed by that signal); None if it ran past ``timeout`` (killed)."""
    end = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > end:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return None
        time.sleep(0.005)


def _alive(pid: int) -> bool:
    if pid in _alive.exited:
        return False
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        _alive.exited[pid] = os.waitstatus_to_exitcode(status)
    return not done


_alive.exited = {}  # pid → exit code, for children reaped while polling


# ------------------------------------------------------------------------------------ fixtures


def _png(seed: int, size: int = 40) -> bytes:
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _make_tiny_run(root: Path) -> int:
    """A tiny Llama LM (+ BPE tokenizer), a tiny NFNet and two shards each of web pages and pairs."""
    import torch
    import webdataset as wds

    from flamingo_vlm.data.document import Document, ImageItem, TextItem

    torch.manual_seed(0)
    write_tiny_parts(root, CORPUS * 4, vocab_size=300)
    rng = random.Random(0)
    for s in range(2):
        with wds.TarWriter(str(root / f"web-{s}.tar")) as writer:
            for i in range(6):
                text = [TextItem(rng.choice(CORPUS)) for _ in range(3)]
                doc = Document([text[0], ImageItem("0.png"), text[1], ImageItem("1.png"), text[2]])
                writer.write(
                    {
                        "__key__": f"page{s}_{i}",
                        "json": doc.to_json(),
                        "0.png": _png(100 * s + 2 * i),
                        "1.png": _png(100 * s + 2 * i + 1),
                    }
                )
        with wds.TarWriter(str(root / f"pairs-{s}.tar")) as writer:
            for i in range(8):
                writer.write({"__key__": f"pair{s}_{i}", "png": _png(1000 + 100 * s + i), "txt": rng.choice(CORPUS)})
    return 0


def _train_argv(root: Path, out: Path, max_steps: int, resume: bool) -> list[str]:
    shards = {name: json.dumps([str(root / f"{name}-{s}.tar") for s in range(2)]) for name in ("web", "pairs")}
    argv = [
        "train",
        str(CONFIG),
        f"model.lm={root / 'lm'}",
        f"model.vision={root / 'vision'}",
        f"data.datasets.0.shards={shards['web']}",
        f"data.datasets.1.shards={shards['pairs']}",
        f"output_dir={out}",
        f"max_steps={max_steps}",
        "checkpoint.every=1",  # a write at every step: many kills land inside one
        "checkpoint.keep_last=2",
    ]
    return argv + (["--resume"] if resume else [])


# ------------------------------------------------------------------------------------ checks


def _checkpoint_dirs(run: Path) -> list[Path]:
    """What a reader (``CheckpointManager.checkpoints``) considers, oldest first."""
    from flamingo_vlm.train.checkpoint import CheckpointManager

    return CheckpointManager(run / "checkpoints").checkpoints()


def _writing(run: Path) -> bool:
    """Whether a checkpoint is being assembled (its temporary directory exists)."""
    with contextlib.suppress(FileNotFoundError):
        return any(p.name.endswith(".tmp") for p in (run / "checkpoints").iterdir())
    return False


def _unreadable(path: Path) -> str | None:
    """Why ``path`` could not be resumed from (manifest, safetensors headers and data, JSON), or None."""
    from safetensors import safe_open

    from flamingo_vlm.train.checkpoint import CheckpointError, verify

    try:
        verify(path)
        for file in path.glob("*.safetensors"):
            with safe_open(str(file), framework="numpy") as f:  # numpy: the campaign never runs torch ops
                for key in f.keys():
                    f.get_tensor(key)
        json.loads((path / "trainer_state.json").read_text())
    except (CheckpointError, OSError, ValueError) as err:  # safetensors raises its own (ValueError-like) errors
        return f"{type(err).__name__}: {err}"
    except Exception as err:  # noqa: BLE001 - SafetensorError derives from Exception
        return f"{type(err).__name__}: {err}"
    return None


def _resumed_from(log: Path, since: int) -> str | None:
    """The checkpoint a launch says it resumed from (its log from byte ``since`` on)."""
    with open(log, "rb") as f:
        f.seek(since)
        text = f.read().decode(errors="replace")
    for line in text.splitlines():
        if "resumed from " in line:
            return line.split("resumed from ", 1)[1].rsplit(" at step ", 1)[0].strip()
    return None


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------------------------ train: kill -9


def _reference(root: Path, out: Path, max_steps: int) -> dict[str, float]:
    """The uninterrupted run, watched: when its first write starts, and how long steps and writes take."""
    log = out.parent / f"{out.name}.log"
    start = time.monotonic()
    pid = _fork(_cli(_train_argv(root, out, max_steps, resume=False)), log)
    appeared, writes, writing_since = [], [], None
    while _alive(pid):
        now = time.monotonic()
        if _writing(out):
            if writing_since is None:
                writing_since = now
                appeared.append(now - start)
        elif writing_since is not None:
            writes.append(now - writing_since)
            writing_since = None
        time.sleep(0.002)
    if _alive.exited.pop(pid) != 0:
        raise RuntimeError(f"the uninterrupted training run failed; see {log}:\n{log.read_text()[-3000:]}")
    period = (appeared[-1] - appeared[0]) / max(len(appeared) - 1, 1) if appeared else 1.0
    return {
        "startup": appeared[0] if appeared else 2.0,
        "step": period,
        "write": sorted(writes)[len(writes) // 2] if writes else 0.05,
        "total": time.monotonic() - start,
    }


def _kill_moment(pid: int, run: Path, rng: random.Random, timing: dict[str, float]) -> tuple[bool, bool]:
    """Wait for a seeded moment and SIGKILL ``pid`` there; (killed, a checkpoint write was under way)."""
    start = time.monotonic()
    if rng.random() < 2 / 3:  # inside a write: wait for a new temporary directory, then a random fraction in
        deadline = start + timing["startup"] + 20 * timing["step"] + 30
        delay = rng.uniform(0, 1.5 * timing["write"])
        skip_writes = rng.randrange(3)  # not always the first write after a resume
        was = _writing(run)
        while time.monotonic() < deadline and _alive(pid):
            now = _writing(run)
            if now and not was:
                if skip_writes == 0:
                    break
                skip_writes -= 1
            was = now
            time.sleep(0.001)
        end = time.monotonic() + delay
    else:  # anywhere: start-up, resume, a step, a write
        end = start + rng.uniform(0, timing["startup"] + 4 * timing["step"])
    while time.monotonic() < end and _alive(pid):
        time.sleep(0.001)
    if pid in _alive.exited:
        return False, False
    writing = _writing(run)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return True, writing


def train_kill_row(root: Path, work: Path, seed: int, kills: int, max_steps: int) -> Row:
    row = Row(CAMPAIGN, "train: kill -9 + resume")
    rng = random.Random(seed)
    reference = work / "reference"
    timing = _reference(root, reference, max_steps)
    ref_ckpt = _checkpoint_dirs(reference)[-1]
    expected = {name: (ref_ckpt / name).read_bytes() for name in ("flamingo.safetensors", "optimizer.safetensors")}
    ref_losses = [r["loss/web"] for r in _metrics(reference)]
    counts = dict(kills=0, kills_in_write=0, resumes=0, runs=0, runs_matched=0, torn_loaded=0, unreadable_dirs=0)
    counts["wrong_resume"] = 0

    def finish(run: Path, log: Path) -> None:
        """Resume ``run`` to the end and compare it with the uninterrupted reference."""
        since = log.stat().st_size if log.exists() else 0
        valid = [str(p) for p in _checkpoint_dirs(run) if _unreadable(p) is None]
        pid = _fork(_cli(_train_argv(root, run, max_steps, resume=True)), log)
        code = _reap(pid, timeout=timing["total"] * 4 + 60)
        check_resume(run, log, since, valid, f"{run.name} final resume")
        counts["runs"] += 1
        if code != 0:
            row.add(
                f"{run.name}: final resume", None, hung=code is None, error=None if code is None else f"exit {code}"
            )
            return
        problems = []
        final = _checkpoint_dirs(run)[-1]
        for name, data in expected.items():
            if (final / name).read_bytes() != data:
                problems.append(f"{name} differs from the uninterrupted run's")
        steps = [r["step"] for r in _metrics(run)]
        if steps != list(range(1, max_steps + 1)):
            problems.append(f"metrics.jsonl steps {steps} (expected 1..{max_steps} once each)")
        elif [r["loss/web"] for r in _metrics(run)] != ref_losses:
            problems.append("metrics.jsonl losses differ from the uninterrupted run's")
        counts["runs_matched"] += not problems
        row.add(f"{run.name}: final weights; " + "; ".join(problems), Outcome(not problems, 1))

    def check_resume(run: Path, log: Path, since: int, valid: list[str], case: str) -> None:
        resumed = _resumed_from(log, since)
        if resumed is None:
            return  # killed before it got there, or nothing to resume from
        counts["resumes"] += 1
        if resumed not in valid:
            counts["torn_loaded"] += 1
            row.failures.append(f"{case}: resumed from {resumed}, which did not verify before the launch")
        elif resumed != valid[-1]:
            counts["wrong_resume"] += 1
            row.failures.append(f"{case}: resumed from {resumed}, not the newest valid {valid[-1]}")

    index = 0
    run, log = work / "killed-0", work / "killed-0.log"
    while counts["kills"] < kills:
        since = log.stat().st_size if log.exists() else 0
        valid = [str(p) for p in _checkpoint_dirs(run) if _unreadable(p) is None]
        pid = _fork(_cli(_train_argv(root, run, max_steps, resume=True)), log)
        killed, writing = _kill_moment(pid, run, rng, timing)
        check_resume(run, log, since, valid, f"{run.name} launch after kill {counts['kills']}")
        if not killed:  # it finished first: judge this run, start another
            row.add(f"{run.name}: finished before its kill", Outcome(1, 1))
            finish(run, log)
            index += 1
            run, log = work / f"killed-{index}", work / f"killed-{index}.log"
            continue
        counts["kills"] += 1
        counts["kills_in_write"] += writing
        bad = {p.name: why for p in _checkpoint_dirs(run) if (why := _unreadable(p))}
        counts["unreadable_dirs"] += len(bad)
        case = f"kill {counts['kills']} ({'in a write' if writing else 'anywhere'}): {run.name}"
        row.add(case + "".join(f"; unreadable {k}: {v}" for k, v in bad.items()), Outcome(not bad, 1))
    finish(run, log)
    row.extra.update(counts)
    return row


# ------------------------------------------------------------------------------------ train: full disk


class _DiskFull:
    """Makes the ``nth`` write of a file named ``target`` fail midway as a full disk does: half the bytes reach
    the file, then the writer raises what it raises on ENOSPC — safetensors its own ``SafetensorError``
    ("... (os error 28)"; seen on a real full tmpfs), Python an ``OSError``."""

    def __init__(self, target: str, nth: int) -> None:
        self.target, self.nth, self.seen = target, nth, 0

    def _due(self, path: str | Path) -> bool:
        name = Path(path).name  # the atomic writer's temporary name: ".<target>.<random>.tmp"
        if name.startswith(f".{self.target}."):
            self.seen += 1
            return self.seen == self.nth
        return False

    def __enter__(self) -> _DiskFull:
        import errno

        from safetensors import SafetensorError

        import flamingo_vlm.io as fio

        self._real = fio.save_file, fio.Path.write_text
        real_save, real_write_text = self._real

        def save_file(tensors, filename, metadata=None) -> None:
            real_save(tensors, filename, metadata=metadata)
            if self._due(filename):
                os.truncate(filename, os.path.getsize(filename) // 2)
                raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

        def write_text(path, data, *args, **kwargs) -> int:
            if self._due(path):
                real_write_text(path, data[: len(data) // 2], *args, **kwargs)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_write_text(path, data, *args, **kwargs)

        fio.save_file, fio.Path.write_text = save_file, write_text
        return self

    def __exit__(self, *exc) -> None:
        import flamingo_vlm.io as fio

        fio.save_file, fio.Path.write_text = self._real


def _disk_full_case(root: Path, out: Path, target: str | None) -> Callable[[], Outcome]:
    """Two steps, a checkpoint each; the second one's ``target`` write hits a (mocked) full disk, or, with
    ``target=None``, the disk under ``out`` really fills up during the second save."""

    def case() -> Outcome:
        from flamingo_vlm.cli import main
        from flamingo_vlm.train.checkpoint import CheckpointManager

        argv = [*_train_argv(root, out, 2, resume=False)]
        err = io.StringIO()
        mock = _DiskFull(target, nth=2) if target else contextlib.nullcontext()
        with mock, contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(argv)
        message = err.getvalue()
        assert code != 0, f"the run reported success (exit {code}) although a checkpoint could not be written"
        assert "No space left on device" in message, f"the error does not name the full disk: {message[-500:]!r}"
        assert "Traceback" not in message, f"a traceback instead of a one-line error: {message[-800:]!r}"
        checkpoints = CheckpointManager(out / "checkpoints").checkpoints()
        assert [p.name for p in checkpoints] == ["step-00000001"], f"checkpoints after the failed save: {checkpoints}"
        assert _unreadable(checkpoints[0]) is None, (
            f"the previous checkpoint was damaged: {_unreadable(checkpoints[0])}"
        )
        left = sorted(p.name for p in (out / "checkpoints").iterdir() if p.name.startswith("."))
        assert not left, f"the failed save left {left} behind"
        if target is None:  # the disk is still full: resuming must find step 1
            from flamingo_vlm.train.build import build_mixture, build_model
            from flamingo_vlm.train.config import TrainConfig
            from flamingo_vlm.train.trainer import Trainer

            config = TrainConfig.load(CONFIG, _train_argv(root, out, 2, resume=True)[2:-1])
            model = build_model(config)
            trainer = Trainer(model, config, build_mixture(config, model))
            assert trainer.resume() and trainer.state.step == 1, "no resume from the checkpoint before the full disk"
        else:  # space is back: resume from the previous one
            with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
                code = main([*_train_argv(root, out, 2, resume=True)])
            assert code == 0, f"resume after the full disk failed (exit {code})"
        return Outcome(good_out=1, good_expected=1)

    return case


def _mount_tmpfs(path: Path, size: int) -> bool:
    """A real full disk: a ``size``-byte tmpfs at ``path``, in a private mount namespace of this (forked,
    single-threaded) process only. False where that is not allowed (no CAP_SYS_ADMIN, seccomp...)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    clone_newns, ms_rec, ms_private = 0x00020000, 0x4000, 1 << 18
    path.mkdir(parents=True, exist_ok=True)
    return (
        libc.unshare(clone_newns) == 0
        and libc.mount(b"none", b"/", None, ms_rec | ms_private, None) == 0
        and libc.mount(b"tmpfs", str(path).encode(), b"tmpfs", 0, f"size={size}".encode()) == 0
    )


def _tmpfs_case(root: Path, out: Path, size: int) -> Callable[[], Outcome]:
    """The same run on a real tmpfs of ``size`` bytes (where mounting one is allowed)."""

    def case() -> Outcome:
        if not _mount_tmpfs(out, size):
            return Outcome(refused=1)  # counted under "refused": this machine cannot mount a small disk
        return _disk_full_case(root, out, None)()

    return case


def _pages(path: Path) -> int:
    """Bytes a tmpfs charges for the files under ``path`` (whole 4 KiB pages)."""
    return sum(-(-p.stat().st_size // 4096) * 4096 for p in path.rglob("*") if p.is_file())


def disk_full_row(root: Path, work: Path, targets: list[str], fractions: list[float], checkpoint: Path) -> Row:
    """Mocked full disks (one per file of the save, portable) and real ones (a tmpfs filling at a fraction of
    the second checkpoint) where this machine allows mounting one."""
    row = Row(CAMPAIGN, "train: full disk during a save")
    for target in targets:
        out = work / f"mock-{target}"
        run_case(row, f"disk full (mock) writing {target}", _disk_full_case(root, out, target), timeout=120)
    first = _pages(checkpoint) + 4 * 4096  # the first checkpoint, config.yaml and metrics.jsonl
    for fraction in fractions:
        size = first + int(fraction * _pages(checkpoint)) // 4096 * 4096
        out = work / f"tmpfs-{fraction}"
        run_case(row, f"disk full (tmpfs of {size} bytes)", _tmpfs_case(root, out, size), timeout=120)
    row.extra.update(mocked=len(targets), real_tmpfs=len(fractions) - row.refused)
    return row


# ------------------------------------------------------------------------------------ build-web: kill -9


def _make_pages(pages: Path, count: int, seed: int) -> None:
    rng = random.Random(seed)
    pages.mkdir(parents=True)
    for i in range(count):
        images = "".join(
            f'<p>{rng.choice(CORPUS)}</p><img src="img{i}_{j}.png" alt="shape {j}">' for j in range(rng.randint(1, 2))
        )
        (pages / f"page{i:04d}.html").write_text(f"<html><body><p>{rng.choice(CORPUS)}</p>{images}</body></html>")
        for j in range(2):
            (pages / f"img{i}_{j}.png").write_bytes(_png(10_000 + 10 * i + j, size=24))


def _build_argv(pages: Path, out: Path) -> list[str]:
    return ["data", "build-web", str(pages), "-o", str(out), "--pages-per-shard", "15", "--min-image-side", "16"]


def _tars(out: Path) -> dict[str, bytes]:
    """What a reader picks up (``expand_shards`` of the directory): every ``*.tar``, by name."""
    from flamingo_vlm.data.shards import expand_shards

    if not out.is_dir():
        return {}
    with contextlib.suppress(ValueError):  # no shards yet
        return {Path(p).name: Path(p).read_bytes() for p in expand_shards(str(out))}
    return {}


def build_kill_row(work: Path, seed: int, kills: int, n_pages: int) -> Row:
    row = Row(CAMPAIGN, "data build-web: kill -9 + rerun")
    rng = random.Random(seed + 1)
    pages = work / "pages"
    _make_pages(pages, n_pages, seed)
    start = time.monotonic()
    pid = _fork(_cli(_build_argv(pages, work / "reference")), work / "reference.log")
    if _reap(pid, timeout=300) != 0:
        raise RuntimeError(f"the uninterrupted build failed: {(work / 'reference.log').read_text()[-3000:]}")
    duration = time.monotonic() - start
    reference = _tars(work / "reference")
    counts = dict(kills=0, torn_tars_visible=0, reruns=0, reruns_identical=0)
    for k in range(kills):
        out, log = work / f"killed-{k}", work / f"killed-{k}.log"
        pid = _fork(_cli(_build_argv(pages, out)), log)
        end = time.monotonic() + rng.uniform(0.1, 0.9) * duration
        while time.monotonic() < end and _alive(pid):
            time.sleep(0.001)
        if pid in _alive.exited:
            row.add(f"build {k}: finished before its kill", Outcome(1, 1))
        else:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            counts["kills"] += 1
            torn = [name for name, data in _tars(out).items() if reference.get(name) != data]
            counts["torn_tars_visible"] += len(torn)
            row.add(f"build {k}: killed; half-written shards visible: {torn}", Outcome(not torn, 1))
        code = _reap(_fork(_cli(_build_argv(pages, out)), log), timeout=300)
        counts["reruns"] += 1
        if code != 0:
            row.add(f"build {k}: rerun", None, hung=code is None, error=None if code is None else f"exit {code}")
            continue
        got = _tars(out)
        differ = sorted(set(got) ^ set(reference)) + [n for n in got if n in reference and got[n] != reference[n]]
        counts["reruns_identical"] += not differ
        row.add(f"build {k}: rerun; shards differing from the uninterrupted build: {differ}", Outcome(not differ, 1))
    row.extra.update(counts, pages=n_pages, shards=len(reference))
    return row


# ------------------------------------------------------------------------------------ campaign


def run(seed: int, scale: float = 1.0, workdir: Path | None = None) -> list[Row]:
    """Scale 1.0: 60 training kills over 90-step runs, 5 mocked and 5 real full disks, 20 build-web kills."""
    with scratch_dir(workdir) as workdir:
        root = workdir / "tiny"
        root.mkdir(parents=True)
        _preload()
        _build_in_fork(lambda: _make_tiny_run(root), workdir / "tiny.log", "the tiny model")
        kills = max(3, round(60 * scale))
        targets = ["flamingo.safetensors", "optimizer.safetensors", "rank-0.safetensors", "trainer_state.json"]
        targets += ["manifest.json"]
        fractions = [0.0, 0.2, 0.4, 0.6, 0.8][: max(1, round(5 * scale))]
        for name in ("train-kill", "disk-full", "build-kill"):
            (workdir / name).mkdir()
        rows = [train_kill_row(root, workdir / "train-kill", seed, kills, max_steps=max(6, round(1.5 * kills)))]
        checkpoint = _checkpoint_dirs(workdir / "train-kill" / "reference")[-1]
        targets = targets[: max(1, round(len(targets) * scale))]
        rows.append(disk_full_row(root, workdir / "disk-full", targets, fractions, checkpoint))
        pages = max(60, round(300 * scale))
        rows.append(build_kill_row(workdir / "build-kill", seed, max(1, round(20 * scale)), pages))
        return rows
