"""File I/O shared by checkpoints and caches: atomic writes (a crash mid-save must never leave a
half-written checkpoint behind), content hashes, and bounded reads of JSON from files a user did not
write (downloaded models, benchmark annotations, shard records, checkpoints).

Untrusted JSON has two limits, so that a crafted file is a ``ValueError`` naming it rather than a
``MemoryError`` or a ``RecursionError`` deep inside:

- size: :data:`MAX_JSON_BYTES` (64 MiB) for configs, manifests and trainer state, which are kilobytes;
  :data:`MAX_ANNOTATION_BYTES` (2 GiB) for benchmark annotation files (VQAv2's train annotations are
  about 330 MB).  The file is read with a bounded ``read``, so a growing file or a device cannot get past it.
- nesting: Python's parser recurses once per level and stops at the interpreter's recursion limit
  (about 1,000 levels); deeper input is refused.  Every real file nests fewer than ten levels, and a
  separate depth walk would cost more than the parse on large annotation files.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file


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


MAX_JSON_BYTES = 64 << 20
MAX_ANNOTATION_BYTES = 2 << 30


def read_bytes(path: str | Path, max_bytes: int) -> bytes:
    """A file's bytes; ``ValueError`` naming it when it holds more than ``max_bytes`` (never read past that)."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size > max_bytes:  # a regular file: refused before reading a byte
            data = b"x" * (max_bytes + 1)
        else:  # bounded even where the size says nothing (a device, a pipe, a file still growing)
            data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ValueError(f"{path} is larger than the {max_bytes:,}-byte limit for this kind of file; refusing it")
    return data


def loads_json(data: str | bytes, source: str | Path = "JSON") -> Any:
    """``json.loads``; bad UTF-8, bad JSON and too-deep nesting are each a ``ValueError`` naming ``source``."""
    try:
        return json.loads(data.decode("utf-8") if isinstance(data, bytes) else data)  # never guessed as UTF-16/32
    except UnicodeDecodeError as err:
        raise ValueError(f"{source} is not UTF-8 text: {err}") from err
    except RecursionError:
        raise ValueError(f"{source} nests deeper than the parser's limit (about 1,000 levels); refusing it") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{source} is not valid JSON: {err}") from err


def read_json(path: str | Path, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """A JSON file within the size and nesting limits (module docstring); ``ValueError`` naming it otherwise."""
    return loads_json(read_bytes(path, max_bytes), path)


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from a safetensors file, or from a torch file with ``weights_only=True``; never unpickles code.

    Weights come from downloaded, untrusted files: a missing, truncated or crafted file (a pickle whose
    ``__reduce__`` runs code) is a ``ValueError`` naming it, and nothing in it is executed.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"weights file {path} does not exist (pickled .bin/.pt files are never loaded instead)")
    try:
        if path.suffix == ".safetensors":
            return load_file(path)
        return torch.load(path, map_location="cpu", weights_only=True)
    except (SafetensorError, pickle.UnpicklingError, RuntimeError, EOFError) as err:
        raise ValueError(f"{path} is not a readable weights file: {type(err).__name__}: {str(err)[:300]}") from err


@contextmanager
def pickled_weights_refused(source: str | Path) -> Iterator[None]:
    """Around a transformers ``from_pretrained``: a ``.bin`` it refused to unpickle becomes a ``ValueError``.

    transformers reads pickled ``pytorch_model.bin`` files with ``weights_only=True``, so a crafted one fails
    with ``UnpicklingError`` instead of running; the user should see which directory, and what to do.
    """
    try:
        yield
    except pickle.UnpicklingError as err:
        reason = next((line for line in str(err).splitlines() if "GLOBAL" in line), str(err).splitlines()[0])
        raise ValueError(
            f"{source}: its pickled weights were refused (read with weights_only=True; {reason.strip()}); "
            "use safetensors weights"
        ) from err
