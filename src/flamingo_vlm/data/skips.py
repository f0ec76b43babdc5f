"""Skipped-data bookkeeping: bad records are dropped, never fatal, and always counted by reason.

A web-scale corpus always holds some broken records (truncated downloads, undecodable images,
mis-encoded text).  A training run must neither die on one nor silently train on it, so every
stage that can reject a record raises :class:`BadSample` with a short machine-readable reason,
and the stage that catches it adds one to a :class:`SkipCounts` under that reason.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping

logger = logging.getLogger(__name__)


class BadSample(Exception):
    """A record that must be skipped; ``reason`` is the counter key (e.g. ``"undecodable_image"``)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class SkipCounts(Counter):
    """``Counter`` of skipped records by reason, with a one-line summary for logs."""

    def skip(self, reason: str, detail: str = "", source: str = "") -> None:
        self[reason] += 1
        logger.debug("skipped %s%s%s", reason, f" ({detail})" if detail else "", f" in {source}" if source else "")

    def merge(self, other: Mapping[str, int]) -> None:
        for reason, count in other.items():
            self[reason] += count

    def summary(self) -> str:
        if not self:
            return "none"
        return ", ".join(f"{reason}={count}" for reason, count in sorted(self.items()))
