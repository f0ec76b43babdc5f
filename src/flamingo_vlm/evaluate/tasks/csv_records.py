"""Reading the CSV annotation files that iVQA and NExT-QA publish (one record per row, named columns)."""

from __future__ import annotations

import csv
from pathlib import Path

from flamingo_vlm import io


def read_csv_records(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    """The rows of ``path`` as dicts; a ``ValueError`` naming the file and the missing columns makes the
    whole file unusable, while a short row surfaces as ``None`` values for its reader to count as malformed."""
    if not path.is_file():
        raise ValueError(f"expected the benchmark file {path}, which does not exist")
    if path.stat().st_size > io.MAX_ANNOTATION_BYTES:
        raise ValueError(f"{path} is larger than {io.MAX_ANNOTATION_BYTES} bytes")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(missing)}; expected {', '.join(required)}")
        return list(reader)
