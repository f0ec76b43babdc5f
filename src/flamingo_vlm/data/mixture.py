"""The λ-weighted dataset mixture: one batch from every dataset per optimiser step.

Flamingo does not sample datasets in proportion: each step accumulates the gradients of one batch
from *each* dataset, the loss of dataset m scaled by λ_m (M3W 1.0, ALIGN 0.2, LTIP 0.2, VTP 0.03);
the paper found this better than round-robin, which is kept as an option for comparison.

Every dataset is read by its own DataLoader.  With an iterable dataset the DataLoader takes batches
from its workers strictly in turn, and each worker's stream is a pure function of its position
(see :mod:`flamingo_vlm.data.shards`), so the mixture's state is small — per dataset, the number of
batches delivered and each worker's position — and restoring it resumes the exact same stream,
provided the number of workers and ranks is unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from flamingo_vlm.data.collate import collate
from flamingo_vlm.data.shards import Position, ShardDataset, Slot
from flamingo_vlm.data.skips import SkipCounts

logger = logging.getLogger(__name__)

SCHEDULES = ("accumulate", "round_robin")
Batch = dict[str, torch.Tensor]


@dataclass
class MixtureComponent:
    dataset: ShardDataset
    weight: float  # λ: multiplies this dataset's loss
    batch_size: int
    name: str = ""
    start_step: int = 0  # the first step that includes this dataset


class _WorkerStream(IterableDataset):
    """One dataset's samples for this rank; DataLoader worker w plays logical worker (w + offset) % n.

    The offset realigns the DataLoader's turn order after a restore: the next batch is due from
    logical worker ``batches % n``, but a fresh DataLoader always asks physical worker 0 first.
    """

    def __init__(
        self, dataset: ShardDataset, seed: int, rank: int, world_size: int, starts: list[Position], offset: int
    ) -> None:
        super().__init__()
        self.dataset, self.seed, self.rank, self.world_size = dataset, seed, rank, world_size
        self.starts, self.offset = starts, offset

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        logical = (worker + self.offset) % num_workers
        slot = Slot(self.rank, self.world_size, logical, num_workers)
        for sample in self.dataset.samples(slot, self.seed, self.starts[logical]):
            sample["__worker__"] = logical
            yield sample


def _collate_with_bookkeeping(samples: list[dict[str, Any]]) -> Batch:
    batch = collate(samples)
    skipped = SkipCounts()
    for s in samples:
        skipped.merge(s["__skipped__"])
    batch["__skipped__"] = dict(skipped)
    batch["__position__"] = samples[-1]["__position__"]
    batch["__worker__"] = samples[-1]["__worker__"]
    return batch


class Mixture:
    """Infinite stream of steps; each step maps dataset name → ``(batch, λ)``.

    ``schedule="accumulate"`` (paper) gives every dataset in every step; ``"round_robin"`` gives one
    dataset per step, in turn. A dataset with ``start_step`` s joins from step s on (pairs first, say).
    Shards are split across distributed ranks (from ``torch.distributed`` unless given) and DataLoader
    workers; epochs reshuffle; everything follows from ``seed``.
    Skipped records are counted per dataset in :attr:`skipped` and logged.

    Only one iterator should be live at a time: a new ``iter(mixture)`` continues from the batches
    delivered so far (or from a state given to :meth:`load_state_dict`).
    """

    def __init__(
        self,
        components: Sequence[MixtureComponent | tuple[ShardDataset, float, int]],
        schedule: str = "accumulate",
        seed: int = 0,
        num_workers: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        pin_memory: bool = False,
    ) -> None:
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
        if not components:
            raise ValueError("a mixture needs at least one dataset")
        self.components = [c if isinstance(c, MixtureComponent) else MixtureComponent(*c) for c in components]
        for i, c in enumerate(self.components):
            c.name = c.name or f"{type(c.dataset).__name__}_{i}"
            if c.weight < 0 or c.batch_size < 1 or c.start_step < 0:
                raise ValueError(
                    f"{c.name}: λ, batch_size and start_step must be >= 0, >= 1 and >= 0, "
                    f"got {c.weight}, {c.batch_size}, {c.start_step}"
                )
        names = [c.name for c in self.components]
        if len(set(names)) != len(names):
            raise ValueError(f"dataset names must be unique, got {names}")
        if min(c.start_step for c in self.components) > 0:
            raise ValueError("at least one dataset must start at step 0")
        if (rank is None) != (world_size is None):
            raise ValueError("give both rank and world_size, or neither")
        if rank is None:
            distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
            rank, world_size = (
                (torch.distributed.get_rank(), torch.distributed.get_world_size()) if distributed else (0, 1)
            )
        self.schedule, self.seed, self.num_workers = schedule, seed, num_workers
        self.rank, self.world_size, self.pin_memory = rank, world_size, pin_memory
        self.step = 0
        self._batches = {n: 0 for n in names}
        self._positions = {n: [Position()] * max(num_workers, 1) for n in names}
        self.skipped = {n: SkipCounts() for n in names}

    def _loader(self, index: int, component: MixtureComponent) -> DataLoader:
        n = max(self.num_workers, 1)
        stream = _WorkerStream(
            component.dataset,
            seed=self.seed * 1_000_003 + index,
            rank=self.rank,
            world_size=self.world_size,
            starts=list(self._positions[component.name]),
            offset=self._batches[component.name] % n,
        )
        return DataLoader(
            stream,
            batch_size=component.batch_size,
            num_workers=self.num_workers,
            collate_fn=_collate_with_bookkeeping,
            pin_memory=self.pin_memory,
        )

    def _account(self, name: str, batch: Batch) -> Batch:
        """Record a delivered batch's position and skips; return the batch without bookkeeping."""
        skipped = batch.pop("__skipped__")
        self._positions[name][batch.pop("__worker__")] = batch.pop("__position__")
        self._batches[name] += 1
        if skipped:
            self.skipped[name].merge(skipped)
            logger.warning(
                "%s: skipped %s (total so far: %s)", name, SkipCounts(skipped).summary(), self.skipped[name].summary()
            )
        return batch

    def __iter__(self) -> Iterator[dict[str, tuple[Batch, float]]]:
        loaders = {c.name: iter(self._loader(i, c)) for i, c in enumerate(self.components)}
        while True:
            active = [c for c in self.components if c.start_step <= self.step]
            due = active if self.schedule == "accumulate" else [active[self.step % len(active)]]
            step = {c.name: (self._account(c.name, next(loaders[c.name])), c.weight) for c in due}
            self.step += 1
            yield step

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "num_workers": self.num_workers,
            "world_size": self.world_size,
            "datasets": {
                name: {
                    "batches": self._batches[name],
                    "positions": [[p.epoch, p.index] for p in self._positions[name]],
                    "skipped": dict(self.skipped[name]),
                }
                for name in self._batches
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["num_workers"] != self.num_workers or state["world_size"] != self.world_size:
            raise ValueError(
                f"state saved with {state['num_workers']} workers x {state['world_size']} ranks cannot resume "
                f"with {self.num_workers} x {self.world_size}: the shard split would differ"
            )
        if set(state["datasets"]) != set(self._batches):
            raise ValueError(
                f"state is for datasets {sorted(state['datasets'])}, this mixture has {sorted(self._batches)}"
            )
        self.step = state["step"]
        for name, entry in state["datasets"].items():
            self._batches[name] = entry["batches"]
            self._positions[name] = [Position(*p) for p in entry["positions"]]
            self.skipped[name] = SkipCounts(entry["skipped"])
