"""Chat messages → Flamingo prompts: images become <image>, earlier turns become closed few-shot chunks."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")

from flamingo_vlm.serve.errors import APIError  # noqa: E402
from flamingo_vlm.serve.mapping import PROMPT_FORMATS, PromptFormat, chat_to_prompt, load_prompt_format  # noqa: E402
from flamingo_vlm.serve.schema import ChatMessage  # noqa: E402

IMG = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}


def text(t: str) -> dict:
    return {"type": "text", "text": t}


def prompt_of(messages: list[dict], fmt: PromptFormat = PROMPT_FORMATS["flamingo"]) -> tuple[str, list[str]]:
    prompt, refs = chat_to_prompt([ChatMessage(**m) for m in messages], fmt, "<image>", "<|endofchunk|>")
    return prompt, [r.where for r in refs]


def test_few_shot_turns_become_closed_chunks():
    messages = [
        {"role": "system", "content": "Shapes."},
        {"role": "user", "content": [IMG, text("Output:")]},
        {"role": "assistant", "content": "a red square."},
        {"role": "user", "content": [IMG, text("Output:")]},
        {"role": "assistant", "content": [text("a blue circle.")]},
        {"role": "user", "content": [IMG, text("Output:")]},
    ]
    prompt, where = prompt_of(messages)
    assert prompt == (
        "Shapes.<image>Output: a red square.<|endofchunk|><image>Output: a blue circle.<|endofchunk|><image>Output:"
    )
    assert where == ["messages[1].content[0]", "messages[3].content[0]", "messages[5].content[0]"]


def test_text_after_an_image_is_closed_by_the_next_image_in_any_order():
    prompt, where = prompt_of(
        [{"role": "user", "content": [text("Compare:"), IMG, IMG, text("this one"), IMG, text("and")]}]
    )
    assert prompt == "Compare:<image><|endofchunk|><image>this one<|endofchunk|><image>and"
    assert where == [f"messages[0].content[{j}]" for j in (1, 2, 4)]


def test_a_string_content_and_the_vqa_format():
    prompt, _ = prompt_of(
        [
            {"role": "user", "content": [IMG, text("what colour?")]},
            {"role": "assistant", "content": "red"},
            {"role": "user", "content": [IMG, text("what shape?")]},
        ],
        PROMPT_FORMATS["vqa"],
    )
    assert prompt == "<image>Question: what colour? Answer: red<|endofchunk|><image>Question: what shape? Answer:"


@pytest.mark.parametrize(
    "messages, param",
    [
        (
            [{"role": "user", "content": [text("a"), {"type": "input_audio", "input_audio": {}}]}],
            "messages[0].content[1]",
        ),
        ([{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}], "messages[0].content[0]"),
        ([{"role": "assistant", "content": [IMG]}], "messages[0].content"),
        ([{"role": "tool", "content": "x"}], "messages[0].role"),
        ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}], "messages[1].role"),
        ([{"role": "user", "content": "a literal <image> marker"}], "messages"),
    ],
)
def test_bad_messages_are_400_naming_the_part(messages, param):
    with pytest.raises(APIError) as err:
        prompt_of(messages)
    assert err.value.status == 400 and err.value.param == param


def test_prompt_format_from_a_file(tmp_path):
    path = tmp_path / "format.yaml"
    path.write_text("user_text: 'Q: {text} A:'\n")
    assert load_prompt_format(str(path)) == PromptFormat(user_text="Q: {text} A:")
    assert load_prompt_format("vqa") is PROMPT_FORMATS["vqa"]
    path.write_text("user_txt: '{text}'\n")
    with pytest.raises(ValueError, match="keys among"):
        load_prompt_format(str(path))
    with pytest.raises(ValueError, match="must contain"):
        PromptFormat(user_text="no placeholder")
    with pytest.raises(ValueError, match="neither a preset"):
        load_prompt_format("nonexistent")
