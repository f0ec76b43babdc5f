"""The batching engine: concurrent requests are decoded together and answer exactly as alone; a client
that disconnects mid-stream frees its slot and its row; a full queue answers 503."""

from __future__ import annotations

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from serve_helpers import get, image_part, post, text_part

from flamingo_vlm.serve import batching

openai = pytest.importorskip("openai")


def chat(seed: int, shots: int = 0) -> list[dict]:
    """A query on picture ``seed``, after ``shots`` few-shot examples: prompts of different lengths."""
    messages = []
    for k in range(shots):
        messages += [
            {"role": "user", "content": [image_part(100 + k), text_part("Output:")]},
            {"role": "assistant", "content": f"shape number {k}."},
        ]
    return messages + [{"role": "user", "content": [image_part(seed), text_part("Question: what is it? Answer:")]}]


def batch_rows_above_one(url: str) -> float:
    """How many batches held more than one row, from /metrics."""
    text = get(f"{url}/metrics")[1].decode()
    le1 = float(re.search(r'flamingo_batch_rows_bucket\{le="1.0"\} (\S+)', text).group(1))
    total = float(re.search(r"flamingo_batch_rows_count (\S+)", text).group(1))
    return total - le1


def test_concurrent_answers_equal_one_at_a_time(make_server):
    """Greedy rows of varied lengths, a beam request and a seeded n=2 request, sent together to a server
    batching up to 6 rows: every answer equals the answer to the same request sent alone."""
    requests = [(chat(seed, shots=seed % 3), 6 + seed, {}) for seed in range(8)]  # varied lengths and max_tokens
    requests += [(chat(9), 6, {"extra_body": {"num_beams": 2}}), (chat(10), 6, {"n": 2, "temperature": 1, "seed": 3})]
    with make_server(batch_wait_ms=300, max_batch_size=6) as (url, _):
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=60)

        def ask(request):
            messages, max_tokens, extra = request
            return client.chat.completions.create(model="tiny", messages=messages, max_tokens=max_tokens, **extra)

        alone = [ask(r) for r in requests]
        before = batch_rows_above_one(url)  # 1: the n=2 request's two rows
        with ThreadPoolExecutor(len(requests)) as pool:
            together = list(pool.map(ask, requests))
        assert batch_rows_above_one(url) >= before + 2  # 10 greedy/sampled rows, at most 6 a batch
    for a, b in zip(alone, together):
        assert [c.message.content for c in b.choices] == [c.message.content for c in a.choices]
        assert [c.finish_reason for c in b.choices] == [c.finish_reason for c in a.choices]
        assert b.usage == a.usage


def test_a_bad_request_does_not_disturb_its_batch(make_server):
    good = chat(1)
    bad = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]
    with make_server(batch_wait_ms=200) as (url, _):
        alone = post(f"{url}/v1/chat/completions", {"messages": good, "max_tokens": 8})
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda m: post(f"{url}/v1/chat/completions", {"messages": m, "max_tokens": 8}),
                                    [good, bad, good, bad]))  # fmt: skip
    assert [status for status, _ in results] == [200, 400, 200, 400]
    assert results[0][1]["choices"] == alone[1]["choices"] == results[2][1]["choices"]


def test_requests_joining_a_running_decode_answer_as_alone(make_server, slow_steps):
    """Continuous batching: requests arriving while a decode runs join it at the next step (longer and
    shorter prompts than the running rows, with and without images, sampled with a seed), and answer
    exactly as they do alone."""
    requests = [
        (chat(1), 30, {}),
        (chat(2, shots=2), 8, {}),  # longer than the running rows: they are left-padded
        (chat(3), 6, {}),  # shorter: it is left-padded
        ([{"role": "user", "content": "Question: no picture? Answer:"}], 6, {}),  # no media slot
        (chat(4, shots=1), 6, {"n": 2, "temperature": 1, "seed": 9}),
    ]
    with make_server(batch_wait_ms=0) as (url, _):
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=60)

        def ask(request):
            messages, max_tokens, extra = request
            return client.chat.completions.create(model="tiny", messages=messages, max_tokens=max_tokens, **extra)

        alone = [ask(r) for r in requests]
        assert b"flamingo_joined_rows_total 0.0" in get(f"{url}/metrics")[1]
        steps_alone = len(slow_steps)
        with ThreadPoolExecutor(len(requests)) as pool:
            first = pool.submit(ask, requests[0])
            while len(slow_steps) < steps_alone + 3:  # the long request is decoding
                time.sleep(0.01)
            later = [pool.submit(ask, r) for r in requests[1:]]
            together = [first.result()] + [f.result() for f in later]
        metrics = get(f"{url}/metrics")[1].decode()
        joined = float(re.search(r"^flamingo_joined_rows_total (\S+)$", metrics, re.M).group(1))
        assert joined >= 2
    for a, b in zip(alone, together):
        assert [c.message.content for c in b.choices] == [c.message.content for c in a.choices]
        assert b.usage == a.usage


@pytest.fixture
def slow_steps(monkeypatch):
    """A slow model: each decoding step takes 50 ms; counts the steps."""
    steps = []
    step = batching.CachedDecoder.step

    def slow(self, *args, **kwargs):
        steps.append(time.monotonic())
        time.sleep(0.05)
        return step(self, *args, **kwargs)

    monkeypatch.setattr(batching.CachedDecoder, "step", slow)
    return steps


def test_a_disconnecting_stream_frees_its_slot_and_row(make_server, slow_steps):
    from flamingo_vlm.serve.config import ServeConfig
    from flamingo_vlm.serve.limits import ServeLimits

    limits = ServeLimits(queue_size=1, max_tokens=200)
    assert ServeConfig(limits=limits).limits.queue_size == 1
    with make_server(limits=limits) as (url, _):
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=60)
        # A prompt whose greedy answer runs to max_tokens (checked after the disconnect).
        stream = client.chat.completions.create(model="tiny", messages=chat(3), max_tokens=60, stream=True)
        next(iter(stream))
        stream.close()  # the client goes away after the first chunk
        deadline = time.monotonic() + 10
        while get(f"{url}/health")[1] != b'{"status":"ok","in_flight":0}' and time.monotonic() < deadline:
            time.sleep(0.02)
        assert get(f"{url}/health")[1] == b'{"status":"ok","in_flight":0}'  # the slot is free again
        time.sleep(0.3)
        decoded = len(slow_steps)
        time.sleep(0.3)
        assert len(slow_steps) == decoded < 59  # its row left the batch: no more steps run for it
        # the freed slot takes a new request (queue_size is 1)
        full = client.chat.completions.create(model="tiny", messages=chat(3), max_tokens=60)
        assert full.choices[0].finish_reason == "length"  # it would have decoded 60 tokens


def test_a_full_queue_answers_503(make_server, slow_steps):
    from flamingo_vlm.serve.limits import ServeLimits

    with make_server(limits=ServeLimits(queue_size=1)) as (url, _):
        first = threading.Thread(
            target=post, args=(f"{url}/v1/chat/completions", {"messages": chat(1), "max_tokens": 20})
        )
        first.start()
        deadline = time.monotonic() + 10
        while not slow_steps and time.monotonic() < deadline:  # the first request is decoding
            time.sleep(0.01)
        status, body = post(f"{url}/v1/chat/completions", {"messages": chat(2), "max_tokens": 2})
        first.join()
        assert status == 503 and body["error"]["code"] == "queue_full"
        assert post(f"{url}/v1/chat/completions", {"messages": chat(2), "max_tokens": 2})[0] == 200  # and recovers
