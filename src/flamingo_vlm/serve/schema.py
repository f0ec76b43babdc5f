"""Request bodies (pydantic) in OpenAI's shapes, plus this server's raw-completion and scoring requests.

Fields OpenAI defines but a Flamingo cannot honour (tools, logprobs, response_format, …) are ignored
as OpenAI-compatible servers do; a value of the wrong type or out of range is a 422 naming the field.
Content parts stay plain dicts here so that a bad part is a 400 naming it (``mapping._parts``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: str
    content: str | list[Any] | None = ""


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class SamplingRequest(BaseModel):
    """Decoding parameters shared by chat and raw completions."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)  # None or 0: greedy (see docs/serving.md)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    n: int = Field(1, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=-(2**62), le=2**62)  # choice k uses seed + k: within torch's seed range
    stream: bool = False
    stream_options: StreamOptions | None = None
    num_beams: int = Field(1, ge=1)  # extra field: beam search (greedy rows otherwise)

    def stop_list(self) -> list[str]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return [s for s in stops if s]


class ChatCompletionRequest(SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)


class CompletionRequest(SamplingRequest):
    """A Flamingo prompt written by the user: ``<image>`` markers and the images' URLs in the same order."""

    prompt: str
    images: list[str] = Field(default_factory=list)


class ScoreRequest(BaseModel):
    """Rank ``candidates`` as continuations of ``prompt`` (with ``images``) by log-likelihood."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    prompt: str
    images: list[str] = Field(default_factory=list)
    candidates: list[str] = Field(min_length=1)
    rank_by: Literal["sum", "mean"] = "sum"
