"""WebDataset shards as an infinite, seeded, resumable stream of records, split across workers.

A *slot* is one (distributed rank, dataloader worker) pair.  Each epoch the shard list is shuffled
with a seed shared by all slots and dealt out so that slots read disjoint shards; records then pass
through a small shuffle buffer.  Every random choice is drawn from a generator seeded by
``(seed, epoch, slot[, record index])``, so a slot's stream is a pure function of its position
``(epoch, index)``: to resume, the slot replays the raw records of the epoch up to ``index``
without decoding them, and continues exactly where it stopped.

Tar files are read with WebDataset's ``tar_file_iterator`` and grouped by key with its
``base_plus_ext`` convention (``page7.json`` + ``page7.0.jpg`` → one record; a file the record already
has starts the next record, so a key written twice gives two records).  A truncated or
unreadable shard ends that shard: the half-read record is dropped and the shard counted as skipped.
"""

from __future__ import annotations

import glob
import os
import random
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from braceexpand import braceexpand
from torch.utils.data import IterableDataset, get_worker_info
from webdataset.tariterators import base_plus_ext, tar_file_iterator

from flamingo_vlm.data.skips import BadSample, SkipCounts

Record = dict[str, Any]  # "__key__", "__url__" and one bytes value per file extension


@dataclass(frozen=True)
class Slot:
    """Which part of the data this process/worker reads."""

    rank: int = 0
    world_size: int = 1
    worker: int = 0
    num_workers: int = 1

    @property
    def index(self) -> int:
        return self.rank * self.num_workers + self.worker

    @property
    def count(self) -> int:
        return self.world_size * self.num_workers


@dataclass(frozen=True)
class Position:
    """Where a slot's stream stands: ``index`` raw records of epoch ``epoch`` already consumed."""

    epoch: int = 0
    index: int = 0


def expand_shards(shards: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """Shard paths from a list, a directory (its ``*.tar``), a glob or a brace pattern."""
    if isinstance(shards, (str, os.PathLike)):
        spec = os.fspath(shards)
        if os.path.isdir(spec):
            paths = sorted(glob.glob(os.path.join(spec, "*.tar")))
        elif any(c in spec for c in "*?["):
            paths = sorted(glob.glob(spec))
        else:
            paths = list(braceexpand(spec))
    else:
        paths = [os.fspath(p) for p in shards]
    if not paths:
        raise ValueError(f"no shards found for {shards!r}")
    return paths


def read_shard(path: str, skipped: SkipCounts) -> Iterator[Record]:
    """The records of one tar shard; on truncation or I/O error, count it and stop cleanly.

    The record being assembled when the error strikes is dropped: its files may be incomplete.
    """
    current: Record | None = None
    try:
        with open(path, "rb") as stream:
            for entry in tar_file_iterator(stream):
                key, extension = base_plus_ext(entry["fname"])
                if key is None:  # no ``key.ext`` name ("README", ".hidden"): belongs to no record
                    skipped.skip("unnamed_member", entry["fname"], path)
                    continue
                extension = extension.lower()
                # A new key, or a file the record already has (a record written twice under one key): the
                # record is complete. Merging would silently replace the first record's files.
                if current is not None and (current["__key__"] != key or extension in current):
                    yield current
                    current = None
                if current is None:
                    current = {"__key__": key, "__url__": path}
                current[extension] = entry["data"]
    except (tarfile.TarError, OSError, EOFError) as e:
        skipped.skip(
            "truncated_shard" if isinstance(e, (tarfile.TarError, EOFError)) else "unreadable_shard", str(e), path
        )
        return
    if current is not None:
        yield current


def _shuffled(records: Iterator[Record | None], buffer_size: int, rng: random.Random) -> Iterator[Record | None]:
    """Reservoir-style shuffle buffer; ``None`` items (skip events) pass straight through."""
    buffer: list[Record] = []
    for record in records:
        if record is None:
            yield None
            continue
        buffer.append(record)
        if len(buffer) >= buffer_size:
            i = rng.randrange(len(buffer))
            buffer[i], buffer[-1] = buffer[-1], buffer[i]
            yield buffer.pop()
    rng.shuffle(buffer)
    yield from buffer


def _rng(*parts: object) -> random.Random:
    # Seeding from a string hashes it with SHA-512: stable across processes and Python runs.
    return random.Random("/".join(map(str, parts)))


class ShardDataset(IterableDataset):
    """Base class: an infinite stream of decoded samples from WebDataset shards.

    Subclasses implement :meth:`decode`, turning one raw record into a sample dict or raising
    :class:`BadSample`.  Each yielded sample also carries two bookkeeping entries that
    :class:`~flamingo_vlm.data.mixture.Mixture` consumes: ``"__position__"`` (the slot's
    :class:`Position` after this sample) and ``"__skipped__"`` (records skipped since the previous
    sample, by reason).  :func:`~flamingo_vlm.data.collate.collate` ignores both.
    """

    def __init__(
        self, shards: str | os.PathLike | Sequence[str | os.PathLike], seed: int = 0, shuffle_buffer: int = 64
    ) -> None:
        super().__init__()
        self.shards = expand_shards(shards)
        self.seed = seed
        self.shuffle_buffer = shuffle_buffer

    def decode(self, record: Record, rng: random.Random) -> dict[str, Any]:
        raise NotImplementedError

    def _raw_records(self, slot: Slot, epoch: int, seed: int, skipped: SkipCounts) -> Iterator[Record | None]:
        """The slot's share of the epoch's records; yields ``None`` after each counted skip."""
        if len(self.shards) < slot.world_size:
            raise ValueError(
                f"{len(self.shards)} shards cannot be split across {slot.world_size} ranks; write more shards"
            )
        order = list(self.shards)
        _rng(seed, epoch, "shards").shuffle(order)  # same order on every slot: the split stays disjoint
        if len(order) >= slot.count:
            mine, keep_every, keep_offset = order[slot.index :: slot.count], 1, 0
        else:  # fewer shards than workers: ranks split shards, workers split their rank's records
            mine, keep_every, keep_offset = order[slot.rank :: slot.world_size], slot.num_workers, slot.worker
        seen = 0
        for path in mine:
            before = sum(skipped.values())
            for record in read_shard(path, skipped):
                if seen % keep_every == keep_offset:
                    yield record
                seen += 1
            if sum(skipped.values()) > before:
                yield None

    def samples(self, slot: Slot, seed: int | None = None, start: Position = Position()) -> Iterator[dict[str, Any]]:
        """The slot's infinite sample stream from ``start`` (a position it produced earlier)."""
        seed = self.seed if seed is None else seed
        epoch, resume_index = start.epoch, start.index
        pending = SkipCounts()
        while True:
            emitted, index = 0, 0
            raw = SkipCounts()
            records = _shuffled(
                self._raw_records(slot, epoch, seed, raw), self.shuffle_buffer, _rng(seed, epoch, slot.index, "buffer")
            )
            for record in records:
                if record is None:  # a shard-level skip; counted only when past the resume point
                    if index >= resume_index:
                        pending.merge(raw)
                    raw.clear()
                    continue
                index += 1
                if index <= resume_index:
                    continue  # replaying: position only, nothing decoded
                try:
                    sample = self.decode(record, _rng(seed, epoch, slot.index, index))
                except BadSample as e:
                    pending.skip(e.reason, e.detail, f"{record['__url__']}:{record['__key__']}")
                    continue
                sample["__position__"] = Position(epoch, index)
                sample["__skipped__"] = dict(pending)
                pending.clear()
                emitted += 1
                yield sample
            if emitted == 0 and resume_index == 0:
                raise ValueError(
                    f"{type(self).__name__}: slot {slot} got no usable sample in a whole epoch "
                    f"(skipped: {pending.summary()}); check the shards {self.shards[:3]}..."
                )
            epoch, resume_index = epoch + 1, 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Standalone use (no resume): the slot follows torch.distributed and the DataLoader worker."""
        yield from self.samples(current_slot())


def current_slot(worker_offset: int = 0) -> Slot:
    """The slot of the calling process: distributed rank/world size and DataLoader worker."""
    rank, world_size = 0, 1
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        rank, world_size = torch.distributed.get_rank(), torch.distributed.get_world_size()
    info = get_worker_info()
    worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
    return Slot(rank, world_size, (worker + worker_offset) % num_workers, num_workers)
