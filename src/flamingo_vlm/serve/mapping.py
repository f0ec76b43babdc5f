"""Chat messages (OpenAI's shape) → one interleaved Flamingo prompt and its images, in order.

Flamingo has no chat template: it was trained on web pages where ``<image>`` stands where a picture
was and ``<|endofchunk|>`` closes the text that belongs to it, and it is prompted few-shot
(``<image>Output: a cat.<|endofchunk|><image>Output:``). The mapping is therefore:

- every ``image_url`` part becomes ``<image>`` (its image goes to the next media slot);
- every text part is written as it is (through :attr:`PromptFormat.user_text`);
- an assistant turn continues the text before it (``PromptFormat.assistant_text``) and is closed by
  ``<|endofchunk|>``: earlier turns are the few-shot examples;
- the text after an image is also closed by ``<|endofchunk|>`` when a next image follows;
- system (and developer) messages are written first, as plain text;
- the last message must come from the user; the answer continues it and ends at ``<|endofchunk|>``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Any

import yaml

from flamingo_vlm.serve.errors import APIError


@dataclass(frozen=True)
class PromptFormat:
    """How each piece of a conversation is written; ``{text}`` is the piece's text.

    The default writes the text as sent, which suits a model trained on captions and few-shot pages;
    ``vqa`` wraps each user text as the paper's VQA prompt, so a client sends only the question.
    """

    system_text: str = "{text}"
    user_text: str = "{text}"
    assistant_text: str = " {text}"

    def __post_init__(self) -> None:
        for f in fields(self):
            if "{text}" not in getattr(self, f.name):
                raise ValueError(f"prompt format field {f.name} must contain {{text}}, got {getattr(self, f.name)!r}")


PROMPT_FORMATS = {
    "flamingo": PromptFormat(),
    "vqa": PromptFormat(user_text="Question: {text} Answer:"),
    "caption": PromptFormat(user_text="Output:{text}"),
}


def load_prompt_format(spec: str) -> PromptFormat:
    """A preset name (:data:`PROMPT_FORMATS`) or a YAML/JSON file with :class:`PromptFormat`'s fields."""
    if spec in PROMPT_FORMATS:
        return PROMPT_FORMATS[spec]
    if not os.path.isfile(spec):
        raise ValueError(f"--prompt-format: {spec!r} is neither a preset ({', '.join(PROMPT_FORMATS)}) nor a file")
    with open(spec, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    known = {f.name for f in fields(PromptFormat)}
    if not isinstance(data, dict) or set(data) - known:
        raise ValueError(f"--prompt-format {spec}: expected a mapping with keys among {sorted(known)}")
    return PromptFormat(**data)


@dataclass
class ImageRef:
    """One image part: its URL and where it was in the request (for error messages)."""

    url: str
    where: str  # e.g. "messages[2].content[0]"


def chat_to_prompt(
    messages: list[Any], fmt: PromptFormat, media_token: str, eoc_token: str
) -> tuple[str, list[ImageRef]]:
    """The Flamingo prompt of a conversation and its image parts in ``<image>`` order (see the module doc)."""
    if not messages:
        raise APIError(400, "messages must not be empty", "messages")
    pieces: list[str] = []
    images: list[ImageRef] = []
    open_chunk = False  # text after an image that no <|endofchunk|> has closed yet
    for i, message in enumerate(messages):
        role, where = message.role, f"messages[{i}]"
        if role in ("system", "developer"):
            pieces.append(fmt.system_text.format(text=_text_only(message.content, where)))
        elif role == "assistant":
            pieces.append(fmt.assistant_text.format(text=_text_only(message.content, where)) + eoc_token)
            open_chunk = False
        elif role == "user":
            for j, (kind, value) in enumerate(_parts(message.content, where)):
                if kind == "text":
                    pieces.append(fmt.user_text.format(text=value))
                    continue
                if open_chunk:
                    pieces.append(eoc_token)
                pieces.append(media_token)
                images.append(ImageRef(value, f"{where}.content[{j}]"))
                open_chunk = True
        else:
            raise APIError(400, f"{where}.role: unsupported role {role!r} (system, user, assistant)", f"{where}.role")
    if messages[-1].role != "user":
        raise APIError(400, "the last message must come from the user", f"messages[{len(messages) - 1}].role")
    prompt = "".join(pieces)
    if prompt.count(media_token) != len(images):
        raise APIError(400, f"text parts must not contain {media_token!r}: send images as image_url parts", "messages")
    return prompt, images


def _parts(content: Any, where: str) -> list[tuple[str, str]]:
    """``[("text", text) | ("image", url), …]`` of a message's content, naming a bad part."""
    if isinstance(content, str):
        return [("text", content)]
    if not isinstance(content, list):
        raise APIError(400, f"{where}.content must be a string or a list of parts", f"{where}.content")
    out = []
    for j, part in enumerate(content):
        at = f"{where}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            out.append(("text", part["text"]))
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if not isinstance(url, str):
                raise APIError(400, f"{at}: image_url needs a url string", at)
            out.append(("image", url))
        else:
            raise APIError(400, f"{at}: unsupported content part {kind!r} (text, image_url)", at)
    return out


def _text_only(content: Any, where: str) -> str:
    parts = _parts(content, where)
    if any(kind != "text" for kind, _ in parts):
        raise APIError(400, f"{where}: only user messages may hold images", f"{where}.content")
    return "".join(text for _, text in parts)
