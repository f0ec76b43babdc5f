"""Atomic file writes: a crash mid-save must never leave a half-written checkpoint behind."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file


def _replace_atomically(write, path: Path) -> None:
    """Write to a temporary file in the same directory, fsync it, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_safetensors(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """safetensors.save_file, atomically; tensors are made contiguous and moved to CPU first."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    _replace_atomically(lambda tmp: save_file(tensors, tmp, metadata=metadata), Path(path))


def write_text(text: str, path: str | Path) -> None:
    _replace_atomically(lambda tmp: Path(tmp).write_text(text), Path(path))
