"""Append-only prediction logs: what makes an evaluation shardable over ranks and resumable after a kill.

Each rank appends one JSON line per query it predicted to its own ``rank-N.jsonl`` under the log directory,
flushed and fsynced line by line, so a SIGKILL tears at most the last line (a line without its newline), which
readers ignore and the rank cuts off before appending again. ``manifest.json`` holds the run's *fingerprint*
(tasks, shots, seed, the model checkpoint's content hash, the evaluation config): a resumed run whose
fingerprint differs is refused, since mixing predictions of two models or two settings would give numbers
that belong to neither. Rank 0 merges every rank's file by query index (files of any earlier world size
included), so the merged predictions do not depend on how many ranks wrote them, or in how many launches.

The log records, for each ``(task, shots, seed, query index)``: the prediction (text, and the candidates'
log-likelihoods for close-ended tasks), the support ids shown, the support examples found undecodable while
choosing them, or that the query's own media was undecodable.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from flamingo_vlm import io

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
_LARGE_FILE = 256 << 20  # files past this are identified by size and their first and last 16 MiB
_SAMPLE = 16 << 20

UnitKey = tuple[str, int, int]  # (task, shots, seed)


class PredictionLogError(ValueError):
    """The log directory cannot be used as asked: it exists without --resume, or was written by another run."""


@dataclass(frozen=True)
class Shard:
    """Which queries this process predicts: fixed batches of consecutive queries, batch ``b`` on rank ``b % world``.

    Batches, not single queries, are dealt out so that every rank builds exactly the batches a single process
    builds: the same padding, hence the same numbers, bit for bit (beam search and log-likelihoods depend on
    a batch's padded length).
    """

    rank: int = 0
    world_size: int = 1

    def __post_init__(self) -> None:
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is not in a world of {self.world_size}")

    def owns(self, batch_index: int) -> bool:
        return batch_index % self.world_size == self.rank


def checkpoint_hash(directory: str | Path) -> str:
    """SHA-256 over a model directory's files (names and contents): the checkpoint's identity.

    Files past 256 MiB (the frozen parts of a ``full`` save) contribute their size and their first and last
    16 MiB, so that identifying a 7B checkpoint does not read 14 GB on every launch.
    """
    root = Path(directory)
    if not root.is_dir():
        raise ValueError(f"model directory {root} does not exist")
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        size = path.stat().st_size
        digest.update(f"{path.relative_to(root).as_posix()}\0{size}\0".encode())
        if size <= _LARGE_FILE:
            digest.update(io.sha256_file(path).encode())
            continue
        with open(path, "rb") as f:
            digest.update(f.read(_SAMPLE))
            f.seek(size - _SAMPLE)
            digest.update(f.read(_SAMPLE))
    return digest.hexdigest()


def read_lines(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The records of one rank's file, and the byte length of its intact part.

    A last line without its newline is the one a kill tore: ignored (and cut off by its writer on resume). A
    broken line anywhere else is damage no kill produces, and a ``PredictionLogError`` naming it.
    """
    data = path.read_bytes()
    intact = data.rfind(b"\n") + 1
    records = []
    for number, line in enumerate(data[:intact].splitlines(), 1):
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise PredictionLogError(f"{path}: line {number} is not a prediction record ({err})") from err
        if not isinstance(record, dict) or not {"task", "shots", "seed", "index"} <= record.keys():
            raise PredictionLogError(f"{path}: line {number} is not a prediction record")
        records.append(record)
    return records, intact


class PredictionLog:
    """One run's prediction logs in ``directory``, as seen by one rank; see the module docstring."""

    def __init__(self, directory: str | Path, fingerprint: Mapping[str, Any], shard: Shard = Shard()) -> None:
        self.directory = Path(directory)
        self.fingerprint = json.loads(json.dumps(fingerprint))  # as it reads back from the manifest
        self.shard = shard
        self.path = self.directory / f"rank-{shard.rank}.jsonl"
        self._file: TextIO | None = None

    # ------------------------------------------------------------------ before the run

    def check(self, resume: bool, overwrite: bool) -> None:
        """Refuse a directory that holds predictions unless asked to resume (same fingerprint) or to overwrite.

        Read-only, so every rank can run it before rank 0 changes anything.
        """
        manifest = self.directory / MANIFEST
        if overwrite or not (manifest.is_file() or any(self.directory.glob("rank-*.jsonl"))):
            return  # nothing there to lose
        if not resume:
            raise PredictionLogError(
                f"{self.directory} already holds an evaluation's predictions: pass --resume to continue it, "
                "or --overwrite to discard them"
            )
        if not manifest.is_file():
            raise PredictionLogError(f"{self.directory} holds prediction logs but no {MANIFEST}: not resumable")
        stored = io.read_json(manifest)
        if stored.get("format") != FORMAT_VERSION or stored.get("fingerprint") != self.fingerprint:
            theirs = stored.get("fingerprint") or {}
            differ = sorted(k for k in {*theirs, *self.fingerprint} if theirs.get(k) != self.fingerprint.get(k))
            raise PredictionLogError(
                f"cannot resume from {self.directory}: its predictions were made by a different run "
                f"(differs in: {', '.join(differ) or 'format'}); use another --output, or --overwrite"
            )

    def prepare(self, overwrite: bool) -> None:
        """Rank 0, after every rank's :meth:`check`: start afresh (``overwrite``) and write the manifest."""
        if overwrite and self.directory.exists():
            shutil.rmtree(self.directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        if not (self.directory / MANIFEST).is_file():
            manifest = {"format": FORMAT_VERSION, "fingerprint": self.fingerprint}
            io.write_text(json.dumps(manifest, indent=1), self.directory / MANIFEST)

    # ------------------------------------------------------------------ during the run

    def open(self) -> None:
        """Cut this rank's torn last line (if a kill left one), then append from there."""
        if self.path.is_file():
            _, intact = read_lines(self.path)
            os.truncate(self.path, intact)
        self._file = open(self.path, "a", encoding="utf-8")

    def append(self, record: Mapping[str, Any]) -> None:
        """One record, durable before the next is written: a kill loses at most the line being written."""
        if self._file is None:
            raise RuntimeError("PredictionLog.open() must be called before append()")
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def records(self, task: str) -> dict[tuple[int, int], dict[int, dict[str, Any]]]:
        """``{(shots, seed): {query index: record}}`` of ``task`` over every rank's file (any world size)."""
        merged: dict[tuple[int, int], dict[int, dict[str, Any]]] = {}
        for path in sorted(self.directory.glob("rank-*.jsonl")):
            for record in read_lines(path)[0]:
                if record["task"] == task:
                    merged.setdefault((record["shots"], record["seed"]), {}).setdefault(record["index"], record)
        return merged


def barrier() -> None:
    """Wait for every rank of the process group (none: return at once)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()
