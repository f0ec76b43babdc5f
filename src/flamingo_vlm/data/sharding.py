"""Writing document shards in parallel and across machines, with names and bytes that never depend on the split.

A build has *n* input units (pages, MMC4 documents, OBELICS rows), numbered in a fixed order. Shard ``j`` holds
the kept records of units ``[j * per_shard, (j + 1) * per_shard)`` and is named ``{prefix}-{j:06d}.tar``: its
name and bytes are a function of the inputs alone. ``--workers N`` only decides which process writes a shard,
and ``--shard-index i --num-shards k`` gives process ``i`` the shards ``j ≡ i (mod k)``, so k machines write
disjoint files whose union is the single-process build. A shard whose units are all skipped is not written
(shard numbers may then have gaps; readers take a directory or a glob).

Each shard is written under ``….tar.tmp`` (which no reader's ``*.tar`` matches), fsynced and renamed once
complete, with a fixed mtime on every entry, so a killed build leaves no half-written shard and a rerun writes
the same bytes.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import webdataset as wds
from tqdm.auto import tqdm

from flamingo_vlm.data.skips import BadSample, SkipCounts

Record = dict[str, Any]


@dataclass
class BuildReport:
    """Kept and skipped documents and images of a build (``pages`` are the input units: pages or documents)."""

    pages_kept: int = 0
    images_kept: int = 0
    pages_skipped: SkipCounts = field(default_factory=SkipCounts)
    images_skipped: SkipCounts = field(default_factory=SkipCounts)
    shards: list[str] = field(default_factory=list)
    unit: str = "pages"

    def merge(self, other: BuildReport) -> None:
        self.pages_kept += other.pages_kept
        self.images_kept += other.images_kept
        self.pages_skipped.merge(other.pages_skipped)
        self.images_skipped.merge(other.images_skipped)
        self.shards.extend(other.shards)

    def summary(self) -> str:
        return (
            f"{self.unit}: kept {self.pages_kept}, "
            f"skipped {sum(self.pages_skipped.values())} ({self.pages_skipped.summary()})\n"
            f"images: kept {self.images_kept}, "
            f"skipped {sum(self.images_skipped.values())} ({self.images_skipped.summary()})\n"
            f"shards: {len(self.shards)}"
        )


class RecordSource(Protocol):
    """Numbered input units that each become at most one shard record. Must be picklable (sent to workers)."""

    def __len__(self) -> int: ...

    def records(self, start: int, stop: int, report: BuildReport) -> Iterator[Record]:
        """The records of units ``[start, stop)`` in order, keyed by unit number; skips are counted in ``report``."""
        ...


@dataclass(frozen=True)
class ShardPlan:
    """How a build is split: units per shard, worker processes here, and this process's part of k machines."""

    per_shard: int = 1000
    workers: int = 1
    shard_index: int = 0
    num_shards: int = 1

    def __post_init__(self) -> None:
        if self.per_shard < 1 or self.workers < 1:
            raise ValueError(f"per_shard and workers must be >= 1, got {self.per_shard} and {self.workers}")
        if not 0 <= self.shard_index < self.num_shards:
            raise ValueError(f"--shard-index must lie in [0, {self.num_shards}), got {self.shard_index}")

    def chunks(self, units: int) -> list[int]:
        """The shard numbers this process writes."""
        return list(range(-(-units // self.per_shard)))[self.shard_index :: self.num_shards]


def counted(report: BuildReport, source: str, make: Callable[..., tuple[Record, int]], *args: object) -> Record | None:
    """The record ``make(*args, images_skipped)`` builds, or ``None`` when it raises BadSample; counted either way."""
    images_skipped = SkipCounts()
    try:
        record, n_images = make(*args, images_skipped)
    except BadSample as e:
        report.pages_skipped.skip(e.reason, e.detail, source)
        return None
    finally:
        report.images_skipped.merge(images_skipped)
    report.pages_kept += 1
    report.images_kept += n_images
    return record


def file_ranges(counts: list[int], start: int, stop: int) -> Iterator[tuple[int, int, int, int]]:
    """``(file, first, last, base)`` for each file holding units ``[start, stop)`` of files of ``counts`` units:
    its local units ``[first, last)``, whose global numbers start at ``base + first``."""
    base = 0
    for number, count in enumerate(counts):
        first, last = max(start - base, 0), min(stop - base, count)
        if first < last:
            yield number, first, last, base
        base += count


def publish(tmp: str) -> None:
    """Make a finished shard visible under its final name: fsync, then one atomic rename."""
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, tmp.removesuffix(".tmp"))


def write_shard(source: RecordSource, chunk: int, per_shard: int, path: str) -> BuildReport:
    """Write shard ``chunk`` to ``path`` (via ``path.tmp``); nothing is left when every unit is skipped."""
    report = BuildReport()
    start = chunk * per_shard
    written = 0
    with wds.TarWriter(path + ".tmp", mtime=0.0) as writer:
        for record in source.records(start, min(start + per_shard, len(source)), report):
            writer.write(record)
            written += 1
    if written:
        publish(path + ".tmp")
        report.shards.append(path)
    else:
        os.remove(path + ".tmp")
    return report


def _write_task(source: RecordSource, task: tuple[int, int, str]) -> BuildReport:
    return write_shard(source, *task)


def write_shards(
    source: RecordSource,
    output_dir: str | os.PathLike,
    prefix: str,
    plan: ShardPlan | None = None,
    progress: bool = True,
    unit: str = "pages",
) -> BuildReport:
    """Write this process's shards of ``source`` into ``output_dir`` (see the module docstring)."""
    plan = plan or ShardPlan()
    os.makedirs(output_dir, exist_ok=True)
    pattern = os.path.join(os.fspath(output_dir), f"{prefix}-%06d.tar")
    tasks = [(j, plan.per_shard, pattern % j) for j in plan.chunks(len(source))]
    report = BuildReport(unit=unit)
    bar = tqdm(total=len(tasks), desc="shards", unit="shard", disable=not progress)
    with contextlib.ExitStack() as stack:
        mapper = map
        if plan.workers > 1 and len(tasks) > 1:
            # imap keeps the shard order, so the report (and its shard list) does not depend on the workers either
            mapper = stack.enter_context(multiprocessing.get_context().Pool(min(plan.workers, len(tasks)))).imap
        for result in mapper(functools.partial(_write_task, source), tasks):
            report.merge(result)
            bar.update()
    bar.close()
    return report
