"""Training checkpoints: atomic, verified, pruned, and exact enough to resume bit for bit.

One checkpoint is a directory ``step-00001000/``:

- ``flamingo_config.json``, ``flamingo.safetensors``, tokenizer files: a normal Flamingo checkpoint,
  written by ``Flamingo.save_pretrained`` (``Flamingo.from_pretrained`` loads it): what Flamingo adds,
  not the frozen parts;
- ``optimizer.safetensors`` (single process and DDP) or ``sharded/`` (FSDP, written by every rank
  with ``torch.distributed.checkpoint``): optimiser state, and under FSDP the weights' shards too;
- ``trainer_state.json``: step, scheduler, optimiser hyper-parameters, counters, the config;
- ``rank-<r>.safetensors``: each rank's RNG states and data-mixture position;
- ``manifest.json``, written last: size and SHA-256 of every file.

Nothing is unpickled on load (tensors come from safetensors, the rest from JSON), except the
``.metadata`` file that ``torch.distributed.checkpoint`` itself pickles in FSDP checkpoints, and that
one through an unpickler that builds only its own metadata classes (:class:`SafeFileSystemReader`):
a crafted checkpoint cannot run code on resume. The
directory is assembled under a temporary name and renamed once complete, so a crash never leaves
a half-written ``step-*``; a checkpoint damaged later (truncated copy, bad disk) fails the
manifest check and the previous one is used.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import random
import re
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from safetensors import safe_open
from torch import nn
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint import metadata as dcp_metadata
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta

from flamingo_vlm.io import as_os_error, load_tensors, loads_json, read_json, save_safetensors, sha256_file, write_text
from flamingo_vlm.model.flamingo import WEIGHTS_NAME
from flamingo_vlm.train.distributed import barrier, broadcast_object, full_tensor, is_distributed

logger = logging.getLogger(__name__)

STEP_DIR = re.compile(r"^step-(\d+)$")
MANIFEST = "manifest.json"
TRAINER_STATE = "trainer_state.json"
OPTIMIZER = "optimizer.safetensors"
SHARDED = "sharded"


class CheckpointError(RuntimeError):
    """A checkpoint that is incomplete, damaged, or written by an incompatible run."""


# ---------------------------------------------------------------------------------------------- RNG


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, JSON) capturing torch (CPU + CUDA), Python and NumPy generators."""
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors.update({f"cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    version, state, gauss = random.getstate()
    np_state = np.random.get_state()
    return tensors, {
        "python": [version, list(state), gauss],
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
    }


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted((k for k in tensors if k.startswith("cuda.")), key=lambda k: int(k[5:]))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    version, state, gauss = meta["python"]
    random.setstate((version, tuple(state), gauss))
    name, keys, *rest = meta["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))


# ------------------------------------------------------------------------------------- optimiser


def flatten_optimizer_state(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``optimizer.state_dict()`` → (tensors for safetensors, JSON-able rest)."""
    tensors, scalars = {}, {}
    for index, entry in state["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{key}"] = value
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def unflatten_optimizer_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for flat, value in [*tensors.items(), *meta["scalars"].items()]:
        index, key = flat.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


# ------------------------------------------------------------------------------------ file checks


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _rmtree_hidden(path: Path) -> None:
    """Delete a checkpoint directory without ever showing a half-deleted ``step-*``: rename it to a hidden
    name first (one atomic step), then delete; a crash in between leaves only the hidden name, swept later."""
    hidden = path.with_name(f".{path.name}.deleting")
    shutil.rmtree(hidden, ignore_errors=True)
    try:
        os.replace(path, hidden)
    except FileNotFoundError:
        return
    shutil.rmtree(hidden, ignore_errors=True)


def _files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST)


def write_manifest(directory: Path) -> None:
    """Fsync every file and record its size and hash; written last, it marks the checkpoint complete."""
    entries = {}
    for path in _files(directory):
        with open(path, "rb") as f:
            os.fsync(f.fileno())
        entries[str(path.relative_to(directory))] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
    write_text(json.dumps(entries, indent=1) + "\n", directory / MANIFEST)


def verify(directory: Path) -> None:
    """Raise :class:`CheckpointError` unless every file matches the manifest."""
    try:
        entries = read_json(directory / MANIFEST)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{directory}: no readable {MANIFEST} ({e})") from e
    for name, entry in entries.items():
        path = directory / name
        if not path.is_file():
            raise CheckpointError(f"{directory}: {name} is missing")
        if path.stat().st_size != entry["size"]:
            raise CheckpointError(
                f"{directory}: {name} has {path.stat().st_size} bytes, expected {entry['size']} (truncated?)"
            )
        if sha256_file(path) != entry["sha256"]:
            raise CheckpointError(f"{directory}: {name} is corrupted (checksum mismatch)")


# What torch.distributed.checkpoint's .metadata pickle may build: its own metadata records, tensor shapes,
# dtypes and layouts, and the paths it stores. Anything else (os.system, eval, ...) is a crafted file.
_DCP_GLOBALS = {
    ("torch", "Size"),
    ("torch.serialization", "_get_layout"),
    ("pathlib", "PosixPath"),
    ("pathlib", "WindowsPath"),
    ("collections", "OrderedDict"),
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
}
_DCP_METADATA_MODULE = "torch.distributed.checkpoint.metadata"


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _DCP_GLOBALS or (module == _DCP_METADATA_MODULE and hasattr(dcp_metadata, name)):
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not part of a checkpoint's metadata")


class SafeFileSystemReader(FileSystemReader):
    """A ``torch.distributed.checkpoint`` reader whose ``.metadata`` is unpickled with :class:`_MetadataUnpickler`."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        path = self._get_metadata_path(kwargs.get("rank"))
        try:
            with self.fs.create_stream(path, "rb") as f:
                metadata = _MetadataUnpickler(f).load()
        except (pickle.UnpicklingError, EOFError, AttributeError, TypeError, ValueError) as err:
            raise CheckpointError(f"{path}: not a torch.distributed.checkpoint metadata file ({err})") from err
        if not isinstance(metadata, Metadata):
            raise CheckpointError(f"{path}: holds a {type(metadata).__name__}, not checkpoint metadata")
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


@dataclass
class Restored:
    """What a loaded checkpoint gives back besides the weights and optimiser (already restored)."""

    path: Path
    trainer_state: dict[str, Any]
    rank_state: dict[str, Any]  # this rank's JSON state (mixture position...)


class CheckpointManager:
    """Saves and restores training state under ``directory``; collective under torch.distributed.

    ``sharded=True`` (FSDP) writes weights and optimiser state with ``torch.distributed.checkpoint``:
    every rank writes its own shards, no rank ever holds the full optimiser state.
    """

    def __init__(self, directory: str | Path, keep_last: int = 3, sharded: bool = False) -> None:
        if keep_last < 1:
            raise ValueError(f"keep_last must be >= 1, got {keep_last}")
        self.directory = Path(directory)
        self.keep_last = keep_last
        self.sharded = sharded
        self.rank = dist.get_rank() if is_distributed() else 0

    def checkpoints(self) -> list[Path]:
        """Complete-looking checkpoint directories, oldest first."""
        if not self.directory.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.directory.iterdir() if (m := STEP_DIR.match(p.name)) and p.is_dir()]
        return [p for _, p in sorted(found)]

    # ----------------------------------------------------------------------------------- save

    def save(
        self,
        step: int,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        trainer_state: dict[str, Any],
        rank_state: dict[str, Any],
    ) -> Path:
        """Write checkpoint ``step`` atomically; ``model`` is the unwrapped Flamingo (FSDP-sharded or not)."""
        final = self.directory / f"step-{step:08d}"
        tmp = self.directory / f".step-{step:08d}.tmp"
        if self.rank == 0:
            self._sweep()
            tmp.mkdir(parents=True)
        barrier()
        try:
            self._write(tmp, step, model, optimizer, trainer_state, rank_state)
        except Exception as err:
            shutil.rmtree(tmp, ignore_errors=True)  # never leave a partial checkpoint behind
            os_err = as_os_error(err)
            if os_err is None:
                raise
            # A full disk, a quota, a read-only mount: training cannot go on safely; stop, and say so in one line.
            previous = self.checkpoints()
            kept = f"the previous checkpoint {previous[-1]} is intact" if previous else "no earlier checkpoint exists"
            raise CheckpointError(
                f"could not write checkpoint {final.name} under {self.directory}: {os_err.strerror or os_err}"
                f"{f' ({os_err.filename})' if os_err.filename else ''}; {kept}. Free space and rerun with --resume."
            ) from err
        barrier()
        if self.rank == 0:
            _rmtree_hidden(final)  # only when this step is saved again (its older copy failed verification)
            os.replace(tmp, final)
            _fsync_dir(self.directory)  # make the rename itself durable
            # This run's history only: checkpoints after ``step`` are not part of it (the damaged ones that a
            # resume skipped); counting them could prune the checkpoint just written, the only good one.
            history = [p for p in self.checkpoints() if int(STEP_DIR.match(p.name).group(1)) <= step]
            for old in history[: -self.keep_last]:
                _rmtree_hidden(old)
        barrier()
        return final

    def _write(
        self,
        tmp: Path,
        step: int,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        trainer_state: dict[str, Any],
        rank_state: dict[str, Any],
    ) -> None:
        """Every file of checkpoint ``step`` into ``tmp``, the manifest last."""
        weights = self.full_trainable_state(model)
        if self.sharded:
            import torch.distributed.checkpoint as dcp

            model_state, optim_state = self._sharded_state(model, optimizer)
            dcp.save({"model": model_state, "optimizer": optim_state}, checkpoint_id=str(tmp / SHARDED))
        if self.rank == 0:
            # The model's own files (config, weights, tokenizer), written by the model; only the
            # weights come from here, gathered above (under FSDP the model holds shards of them).
            model.save_pretrained(tmp, state_dict=weights, require_references=False)
            state = dict(trainer_state, step=step)
            if not self.sharded:
                tensors, meta = flatten_optimizer_state(optimizer.state_dict())
                save_safetensors(tensors, tmp / OPTIMIZER)
                state["optimizer"] = meta
            write_text(json.dumps(state, indent=1) + "\n", tmp / TRAINER_STATE)
        rng_tensors, rng_meta = rng_state()
        save_safetensors(
            rng_tensors,
            tmp / f"rank-{self.rank}.safetensors",
            metadata={"rng": json.dumps(rng_meta), "state": json.dumps(rank_state)},
        )
        barrier()
        if self.rank == 0:
            write_manifest(tmp)

    def _sweep(self) -> None:
        """Remove what a killed save or prune left behind (hidden ``.step-*`` directories; no reader sees them)."""
        if self.directory.is_dir():
            for path in self.directory.glob(".step-*"):
                shutil.rmtree(path, ignore_errors=True)

    def full_trainable_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """``model.added_state_dict()`` with every tensor complete (collective under FSDP)."""
        added = model.added_state_dict()
        if self.sharded:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

            options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
            state = get_model_state_dict(model, options=options)  # trained weights, on rank 0 only
            # The fixed added tensors (frozen new rows, output scales): gathered by every rank, in the same order.
            fixed = {k: full_tensor(t).detach().cpu() for k, t in added.items() if not t.requires_grad}
            state = {k: v for k, v in {**state, **fixed}.items() if k in added}
        else:
            state = {name: t.detach() for name, t in added.items()}
        return state

    @staticmethod
    def _sharded_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

        return get_state_dict(model, optimizer, options=StateDictOptions(ignore_frozen_params=True))

    # ----------------------------------------------------------------------------------- load

    def load_latest(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> Restored | None:
        """Restore the newest checkpoint that verifies; warn about (and skip) damaged ones."""
        chosen = None
        if self.rank == 0:
            for path in reversed(self.checkpoints()):
                try:
                    verify(path)
                    chosen = str(path)
                    break
                except CheckpointError as e:
                    message = f"checkpoint {path.name} cannot be used ({e}); falling back to the previous one"
                    warnings.warn(message, stacklevel=2)
                    logger.warning(message)
        chosen = broadcast_object(chosen)
        if chosen is None:
            return None
        return self.load(Path(chosen), model, optimizer)

    def load(self, path: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> Restored:
        trainer_state = read_json(path / TRAINER_STATE)
        rank_file = path / f"rank-{self.rank}.safetensors"
        if not rank_file.is_file():
            raise CheckpointError(f"{path} has no state for rank {self.rank}: it was written with fewer ranks")
        if self.sharded:
            if not (path / SHARDED).is_dir():
                raise CheckpointError(f"{path} is not a sharded (FSDP) checkpoint")
            import torch.distributed.checkpoint as dcp
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

            model_state, optim_state = self._sharded_state(model, optimizer)
            state = {"model": model_state, "optimizer": optim_state}
            reader = SafeFileSystemReader(str(path / SHARDED))
            reader.read_metadata()  # a crafted .metadata fails here, as itself, before dcp wraps the error
            dcp.load(state, storage_reader=reader)
            set_state_dict(
                model,
                optimizer,
                model_state_dict=state["model"],
                optim_state_dict=state["optimizer"],
                options=StateDictOptions(ignore_frozen_params=True, strict=False),
            )
        else:
            if "optimizer" not in trainer_state:
                raise CheckpointError(f"{path} is a sharded (FSDP) checkpoint; resume it with strategy: fsdp")
            model.load_added_state_dict(load_tensors(path / WEIGHTS_NAME))
            tensors = load_tensors(path / OPTIMIZER)
            optimizer.load_state_dict(unflatten_optimizer_state(tensors, trainer_state["optimizer"]))
            for group in optimizer.param_groups:
                group["betas"] = tuple(group["betas"])  # JSON turned the tuple into a list
                for param in group["params"]:  # checkpoints from before the (1,) gates hold 0-d gate moments
                    for key, value in optimizer.state.get(param, {}).items():
                        if key != "step" and torch.is_tensor(value) and value.ndim == 0 and param.shape == (1,):
                            optimizer.state[param][key] = value.reshape(1)
        with safe_open(str(rank_file), framework="pt") as f:
            meta = f.metadata()
            rng_tensors = {k: f.get_tensor(k) for k in f.keys()}
        set_rng_state(rng_tensors, loads_json(meta["rng"], rank_file))
        return Restored(path, trainer_state, loads_json(meta["state"], rank_file))
