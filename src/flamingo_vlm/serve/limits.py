"""What one request may ask of the server, and the middleware that enforces the body-size cap.

A public endpoint on a model server is an easy target: a 1 GB body, a 100 000 × 100 000 PNG (a few
kilobytes compressed, 40 GB decoded), a thousand images or ``max_tokens=10**9`` would each stall every
other user. Each cap below is checked before the model sees the request and answered with 413 (too
large) or 400 (a parameter out of range); the defaults suit a small model on one machine.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ServeLimits:
    """Per-request caps (each a CLI flag of ``flamingo serve``)."""

    max_body_bytes: int = 20 * 1024 * 1024  # the whole HTTP body (base64 images included)
    max_images: int = 16  # images per request, few-shot examples included
    max_image_bytes: int = 10 * 1024 * 1024  # one encoded image, after base64 decoding or download
    max_image_pixels: int = 4096 * 4096  # width × height, read from the header before decoding (bombs)
    max_prompt_tokens: int = 2048  # the tokenized Flamingo prompt
    max_tokens: int = 512  # max_tokens / max_completion_tokens
    max_n: int = 8  # choices per chat request
    max_num_beams: int = 8
    max_candidates: int = 64  # continuations per scoring request
    remote_timeout_s: float = 5.0  # --allow-remote-images: per download
    queue_size: int = 64  # requests waiting or running; one more gets 503

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if value <= 0:
                raise ValueError(f"limit {name} must be > 0, got {value}")
