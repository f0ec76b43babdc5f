"""``ServeConfig``: everything ``flamingo serve`` decides besides the model (limits, auth, batching)."""

from __future__ import annotations

from dataclasses import dataclass, field

from flamingo_vlm.serve.limits import ServeLimits
from flamingo_vlm.serve.mapping import PromptFormat


@dataclass
class ServeConfig:
    """Server settings; the defaults are the safe ones (no key needed on loopback, data URLs only)."""

    model_id: str = "flamingo"  # the name GET /v1/models lists and responses carry
    api_key: str | None = None  # when set, every route but /health and the page needs "Authorization: Bearer"
    allow_remote_images: bool = False  # fetch http(s) image URLs (timeout and size cap from limits)
    max_batch_size: int = 16  # rows (choices) decoded together
    batch_wait_ms: float = 20.0  # how long a request waits for company, under load (batching.py)
    limits: ServeLimits = field(default_factory=ServeLimits)
    prompt_format: PromptFormat = field(default_factory=PromptFormat)

    def __post_init__(self) -> None:
        if self.max_batch_size < 1 or self.batch_wait_ms < 0:
            raise ValueError(f"need max_batch_size >= 1 and batch_wait_ms >= 0, got {self.max_batch_size}, "
                             f"{self.batch_wait_ms}")  # fmt: skip
