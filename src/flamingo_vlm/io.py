"""File I/O shared by checkpoints and caches: atomic writes (a crash mid-save must never leave a
half-written checkpoint behind) and content hashes."""

from __future__ import annotations

import errno
import hashlib
import os
import re
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
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

    def write(tmp: str) -> None:
        try:
            save_file(tensors, tmp, metadata=metadata)
        except SafetensorError as err:  # its I/O errors (a full disk...) are not OSErrors: make them one
            raise as_os_error(err, tmp) or err from err

    _replace_atomically(write, Path(path))


def as_os_error(err: BaseException, filename: str | None = None) -> OSError | None:
    """``err`` as the OSError it stands for: Rust-backed writers (safetensors, tokenizers) report a full disk
    as their own exception, "... (os error 28)"; None when ``err`` is no I/O error."""
    if isinstance(err, OSError):
        return err
    code = re.search(r"\(os error (\d+)\)", str(err))
    if code is None:
        return None
    number = int(code[1])
    return OSError(number, os.strerror(number) or errno.errorcode.get(number, "I/O error"), filename)


def write_text(text: str, path: str | Path) -> None:
    _replace_atomically(lambda tmp: Path(tmp).write_text(text), Path(path))


def sha256_file(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks so a large checkpoint never sits in memory whole."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
