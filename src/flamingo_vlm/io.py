"""File I/O shared by checkpoints and caches: atomic writes (a crash mid-save must never leave a
half-written checkpoint behind) and content hashes."""

from __future__ import annotations

import hashlib
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


def save_safetensors(
    tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None
) -> None:
    """safetensors.save_file, atomically; tensors are made contiguous and moved to CPU first."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    _replace_atomically(lambda tmp: save_file(tensors, tmp, metadata=metadata), Path(path))


def write_text(text: str, path: str | Path) -> None:
    _replace_atomically(lambda tmp: Path(tmp).write_text(text), Path(path))


def sha256_file(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks so a large checkpoint never sits in memory whole."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
