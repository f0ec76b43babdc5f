"""What every fault campaign records, and how one case is run and judged.

A case feeds one deliberately broken (or deliberately good) input through one real input path. It must end
in exactly one of the accepted outcomes — good records out, a counted skip with its reason, or a
``ValueError`` naming the problem — within its time bound. Anything else is a failure the campaign reports:
another exception type is a *crash*, running past the bound is a *hang*, and a good record that does not
come out is *lost*.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import tempfile
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Outcome:
    """What one case produced: good records out, skips counted by reason, or the ValueError it raised."""

    good_out: int = 0  # good records that came out of the path
    good_expected: int = 0  # good records the case put in next to the bad ones
    skips: Counter = field(default_factory=Counter)  # reason → count (the path's own SkipCounts)
    value_error: str | None = None  # the message, when the path refused the input with a ValueError
    refused: int = 0  # untrusted files refused (or loaded without executing anything)


@dataclass
class Row:
    """One line of the campaign table: one input path, all its cases."""

    campaign: str
    path: str
    cases: int = 0
    good_out: int = 0
    good_expected: int = 0
    skips: Counter = field(default_factory=Counter)
    value_errors: int = 0
    crashes: int = 0
    hangs: int = 0
    refused: int = 0
    extra: dict[str, Any] = field(default_factory=dict)  # campaign-specific counts (kills, resumes matched, …)
    failures: list[str] = field(default_factory=list)  # one line per crash / hang / loss: what and which case

    @property
    def lost(self) -> int:
        return self.good_expected - self.good_out

    @property
    def ok(self) -> bool:
        return not (self.crashes or self.hangs or self.lost or self.failures)

    def add(self, case: str, outcome: Outcome | None, error: str | None = None, hung: bool = False) -> None:
        """Record one case: its outcome, or the crash / hang that stopped it."""
        self.cases += 1
        if hung:
            self.hangs += 1
            self.failures.append(f"hang: {case}")
            return
        if error is not None:
            self.crashes += 1
            self.failures.append(f"crash: {case}: {error}")
            return
        assert outcome is not None
        self.good_out += outcome.good_out
        self.good_expected += outcome.good_expected
        self.skips.update(outcome.skips)
        self.value_errors += outcome.value_error is not None
        self.refused += outcome.refused
        if outcome.good_out < outcome.good_expected:
            self.failures.append(f"lost {outcome.good_expected - outcome.good_out} good record(s): {case}")


def _child(fn: Callable[[], Outcome], queue: multiprocessing.Queue) -> None:
    import torch

    torch.set_num_threads(1)  # a forked child must not reuse the parent's OpenMP pool (as DataLoader workers)
    try:
        queue.put(("ok", fn()))
    except ValueError as err:  # the accepted refusal: a ValueError that names the problem
        queue.put(("ok", Outcome(value_error=str(err) or type(err).__name__)))
    except BaseException as err:  # noqa: BLE001 - any other exception is the crash being measured
        queue.put(("crash", f"{type(err).__name__}: {err}"[:300] + "\n" + traceback.format_exc()[-1500:]))


def run_case(row: Row, case: str, fn: Callable[[], Outcome], timeout: float = 30.0) -> None:
    """Run ``fn`` in a forked child bounded by ``timeout`` seconds, and record the result in ``row``.

    A fork (not a thread) so that a hang can be killed and a crash cannot take the campaign down with it.
    """
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(fn, queue), daemon=True)
    proc.start()
    proc.join(timeout)
    if proc.is_alive():
        proc.kill()
        proc.join()
        row.add(case, None, hung=True)
        return
    try:
        status, value = queue.get(timeout=5)
    except Exception:  # noqa: BLE001 - the child died without reporting (e.g. killed by the OS)
        row.add(case, None, error=f"child exited with code {proc.exitcode} and no result")
        return
    if status == "ok":
        row.add(case, value)
    else:
        row.add(case, None, error=value)


def table(rows: list[Row]) -> str:
    """The campaign table in markdown."""
    lines = [
        "| campaign | path | cases | good out / in | skips by reason | ValueError | refused | crashes | hangs "
        "| extra |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        skips = ", ".join(f"{k} {v}" for k, v in sorted(r.skips.items())) or "–"
        extra = ", ".join(f"{k} {v}" for k, v in r.extra.items()) or "–"
        lines.append(
            f"| {r.campaign} | {r.path} | {r.cases} | {r.good_out} / {r.good_expected} | {skips} | {r.value_errors} "
            f"| {r.refused} | {r.crashes} | {r.hangs} | {extra} |"
        )
    return "\n".join(lines)


@contextlib.contextmanager
def scratch_dir(workdir: Path | None) -> Iterator[Path]:
    """``workdir`` when given (kept for inspection), else a temporary directory removed afterwards."""
    if workdir is not None:
        yield Path(workdir)
        return
    with tempfile.TemporaryDirectory() as tmp:
        yield Path(tmp)


# The tiny trainable parts every campaign's model gets (the frozen ones come from ``write_tiny_parts``).
TINY_FLAMINGO = {
    "num_latents": 4,
    "resampler_depth": 1,
    "resampler_heads": 2,
    "resampler_dim_head": 8,
    "xattn_heads": 2,
    "xattn_dim_head": 8,
}


def write_tiny_parts(root: Path, texts: list[str], vocab_size: int = 300, max_positions: int = 128) -> Any:
    """The frozen parts every campaign runs on: a 2-layer Llama LM with a BPE tokenizer trained on ``texts``
    (``root/lm``) and a tiny NFNet for 32-pixel images (``root/vision``). Returns the tokenizer.

    Seed the global RNG before calling: the random weights are drawn from it.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    from flamingo_vlm.model.nfnet import NFNetConfig, NFNetEncoder
    from flamingo_vlm.tokenization import train_bpe_tokenizer

    tokenizer = train_bpe_tokenizer(texts, vocab_size=vocab_size)
    eos = tokenizer.eos_token_id
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=max_positions,
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=eos,
    )
    LlamaForCausalLM(config).save_pretrained(root / "lm")
    tokenizer.save_pretrained(root / "lm")
    vision = NFNetEncoder(NFNetConfig(image_size=32, stem_width=8, widths=(8, 16), depths=(1, 1), hidden_size=24))
    vision.save_pretrained(root / "vision")
    return tokenizer
