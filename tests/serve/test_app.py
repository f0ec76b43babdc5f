"""The API through the real ``openai`` client: chat with interleaved images, streaming, n > 1, and
answers equal to ``model.generate`` on the prompt the mapping writes."""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image
from serve_helpers import get, image_part, picture, post, text_part

from flamingo_vlm.model.generation import default_stop_ids

openai = pytest.importorskip("openai")

FEW_SHOT = [
    {"role": "user", "content": [image_part(1), text_part("Output:")]},
    {"role": "assistant", "content": "a red square."},
    {
        "role": "user",
        "content": [text_part("Look:"), image_part(2), text_part("a cat"), image_part(3), text_part("Output:")],
    },
]
FEW_SHOT_PROMPT = "<image>Output: a red square.<|endofchunk|>Look:<image>a cat<|endofchunk|><image>Output:"


def client(url: str, key: str = "none"):
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=60)


def reference(model_and_processor, prompt: str, seeds: list[int], max_new_tokens: int, **kwargs) -> str:
    """What ``model.generate`` answers on ``prompt`` with these pictures, decoded as ``flamingo generate`` does."""
    model, processor = model_and_processor
    images = [Image.open(io.BytesIO(picture(s))) for s in seeds]
    batch = processor([prompt], images=[images])
    out = model.generate(**batch, max_new_tokens=max_new_tokens, eos_token_id=default_stop_ids(model), **kwargs)
    return processor.decode(out[0], prompt_length=batch["input_ids"].shape[1])


def test_chat_with_interleaved_images_equals_generate(server, model_and_processor):
    url, _ = server
    response = client(url).chat.completions.create(model="tiny", messages=FEW_SHOT, max_tokens=12, temperature=0)
    expected = reference(model_and_processor, FEW_SHOT_PROMPT, [1, 2, 3], 12)
    assert response.choices[0].message.content == expected
    assert response.object == "chat.completion" and response.model == "tiny"
    usage = response.usage
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert response.choices[0].finish_reason in ("stop", "length")
    if response.choices[0].finish_reason == "length":
        assert usage.completion_tokens == 12


def test_beam_search_equals_generate(server, model_and_processor):
    url, _ = server
    response = client(url).chat.completions.create(
        model="tiny", messages=FEW_SHOT, max_tokens=8, extra_body={"num_beams": 3}
    )
    expected = reference(model_and_processor, FEW_SHOT_PROMPT, [1, 2, 3], 8, num_beams=3)
    assert response.choices[0].message.content == expected


def test_streaming_deltas_add_up_to_the_answer(server, model_and_processor):
    url, _ = server
    stream = client(url).chat.completions.create(
        model="tiny", messages=FEW_SHOT, max_tokens=12, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == reference(model_and_processor, FEW_SHOT_PROMPT, [1, 2, 3], 12)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finishes) == 1 and chunks[-2].choices[0].finish_reason == finishes[0]  # last choice chunk
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens >= 1  # the usage chunk


def test_n_seeded_samples_equal_generate_with_seed_plus_index(server, model_and_processor):
    url, _ = server
    response = client(url).chat.completions.create(
        model="tiny", messages=FEW_SHOT, max_tokens=10, n=3, temperature=0.9, top_p=0.95, seed=7
    )
    assert [c.index for c in response.choices] == [0, 1, 2]
    for k, choice in enumerate(response.choices):
        generator = torch.Generator().manual_seed(7 + k)
        expected = reference(
            model_and_processor, FEW_SHOT_PROMPT, [1, 2, 3], 10, do_sample=True, temperature=0.9, top_p=0.95,
            generator=generator,
        )  # fmt: skip
        assert choice.message.content == expected


def test_stop_strings_cut_the_answer(server):
    url, _ = server
    full = client(url).chat.completions.create(model="tiny", messages=FEW_SHOT, max_tokens=16).choices[0]
    text = full.message.content
    if len(text) < 4:
        pytest.skip(f"the random model answered too briefly to cut: {text!r}")
    stop = text[2:4]
    cut = client(url).chat.completions.create(model="tiny", messages=FEW_SHOT, max_tokens=16, stop=[stop]).choices[0]
    assert cut.finish_reason == "stop"
    assert cut.message.content == text[: text.find(stop)].strip()


def test_raw_completion_equals_chat(server):
    url, _ = server
    chat = client(url).chat.completions.create(model="tiny", messages=FEW_SHOT, max_tokens=10)
    raw = client(url).completions.create(
        model="tiny",
        prompt=FEW_SHOT_PROMPT,
        max_tokens=10,
        extra_body={"images": [p["image_url"]["url"] for m in FEW_SHOT for p in m["content"] if "image_url" in p]},
    )
    assert raw.object == "text_completion"
    assert raw.choices[0].text == chat.choices[0].message.content


def test_score_ranks_candidates_like_model_score(server, model_and_processor):
    url, _ = server
    model, processor = model_and_processor
    candidates = [" a red square.", " a cat.", " two blue circles"]
    images = [image_part(1)["image_url"]["url"]]
    status, body = post(f"{url}/v1/score", {"prompt": "<image>Output:", "images": images, "candidates": candidates})
    assert status == 200
    batch = processor(["<image>Output:"], images=[[Image.open(io.BytesIO(picture(1)))]])
    expected = model.score(**batch, candidates=processor.tokenize_candidates([candidates])).sum_logprobs[0]
    assert [d["sum_logprob"] for d in body["data"]] == pytest.approx(expected.tolist(), abs=1e-4)
    assert body["ranking"] == sorted(range(3), key=lambda k: -expected[k].item())


def test_models_health_and_metrics(server):
    url, _ = server
    assert [m.id for m in client(url).models.list()] == ["tiny"]
    status, body = get(f"{url}/health")
    assert status == 200 and b'"ok"' in body
    client(url).chat.completions.create(model="tiny", messages=FEW_SHOT, max_tokens=2)
    status, body = get(f"{url}/metrics")
    text = body.decode()
    assert status == 200
    assert 'flamingo_requests_total{route="/v1/chat/completions",status="200"}' in text
    for name in ("flamingo_request_latency_seconds_bucket", "flamingo_generated_tokens_total",
                 "flamingo_tokens_per_second", "flamingo_batch_rows_bucket"):  # fmt: skip
        assert name in text
