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


@pytest.fixture
def prefills(monkeypatch):
    """Each prefill the engine runs: (time it started, rows, the arrival time of each of its jobs)."""
    started = []
    start = batching.BatchEngine._start

    def recording(self, jobs):
        started.append((time.monotonic(), sum(job.rows for job in jobs), [job.arrived for job in jobs]))
        return start(self, jobs)

    monkeypatch.setattr(batching.BatchEngine, "_start", recording)
    return started


def test_waiting_requests_join_together_once_they_fill_the_batch(make_server, slow_steps, prefills):
    """Three requests arriving one by one during a decode join it in one prefill, as soon as they fill its
    free rows (batch_wait_ms is a minute: waiting for it would time the test out), and answer as alone."""
    later = [(chat(1), 6), (chat(2, shots=1), 5), (chat(4), 7)]
    with make_server(batch_wait_ms=60_000, max_batch_size=4) as (url, _):
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=60)

        def ask(messages, max_tokens):
            return client.chat.completions.create(model="tiny", messages=messages, max_tokens=max_tokens)

        alone = [ask(*r) for r in later]
        before = len(prefills)
        with ThreadPoolExecutor(4) as pool:
            long = pool.submit(ask, chat(3), 60)
            while len(slow_steps) < 3:  # the long request is decoding
                time.sleep(0.01)
            together = []
            for request in later:
                together.append(pool.submit(ask, *request))
                time.sleep(0.1)  # one by one, each while the others wait
            together = [f.result() for f in together]
            assert long.result().choices[0].finish_reason == "length"
    assert [rows for _, rows, _ in prefills[before:]] == [1, 3]
    for a, b in zip(alone, together):
        assert b.choices[0].message.content == a.choices[0].message.content and b.usage == a.usage


def test_a_request_joins_alone_after_batch_wait_ms(make_server, slow_steps, prefills):
    """One request arriving during a decode, with rows to spare, waits batch_wait_ms for company, then joins."""
    with make_server(batch_wait_ms=400) as (url, _):
        with ThreadPoolExecutor(2) as pool:
            long = pool.submit(post, f"{url}/v1/chat/completions", {"messages": chat(3), "max_tokens": 60})
            while len(slow_steps) < 3:
                time.sleep(0.01)
            status, _ = post(f"{url}/v1/chat/completions", {"messages": chat(1), "max_tokens": 4})
            assert status == 200 and long.result()[0] == 200
    started, rows, (arrived,) = prefills[-1]
    assert rows == 1 and 0.4 <= started - arrived < 0.4 + 0.5  # waited, then joined within a few 50 ms steps


def test_only_a_loaded_server_waits_for_company(make_server, slow_steps, prefills):
    """A lone client never waits batch_wait_ms. A decode that ends with a request still waiting marks the
    server as loaded: that request's batch then waits for company until batch_wait_ms after its arrival
    (here in vain). After a decode without company, the next lone request again starts at once."""
    url_path = "/v1/chat/completions"

    def wait_of_last_batch():
        started, _, arrived = prefills[-1]
        return started - min(arrived)

    with make_server(batch_wait_ms=1500) as (url, _):
        assert post(url + url_path, {"messages": chat(1), "max_tokens": 3})[0] == 200
        assert wait_of_last_batch() < 1.0
        with ThreadPoolExecutor(1) as pool:
            long = pool.submit(post, url + url_path, {"messages": chat(3), "max_tokens": 20})  # 20 steps: 1 s
            while len(slow_steps) < 3:
                time.sleep(0.01)
            assert post(url + url_path, {"messages": chat(1), "max_tokens": 3})[0] == 200  # not joined in 1.5 s
            assert long.result()[0] == 200
        assert wait_of_last_batch() >= 1.5
        assert post(url + url_path, {"messages": chat(2), "max_tokens": 3})[0] == 200
        assert wait_of_last_batch() < 1.0


def test_a_reply_sent_whole_gets_its_text_once_and_equal_to_the_stream(model_and_processor):
    """Without streaming a row decodes and sends its text once, at the end; that text is the streamed deltas
    joined, with and without stop strings."""
    model, processor = model_and_processor
    tokenizer = processor.tokenizer
    tokens = tokenizer(" shape number 3 and a red circle", add_special_tokens=False)["input_ids"]

    class Sink:  # a Job's emit, recorded
        def __init__(self, stream, decoding):
            self.stream, self.decoding, self.events = stream, decoding, []

        def emit(self, event):
            self.events.append(event)

    for stop in ([], ["red"]):
        texts = {}
        for stream in (True, False):
            job = Sink(stream, batching.Decoding(max_new_tokens=len(tokens), stop=stop))
            row = batching._Row(job, 0, "cpu")
            for token in tokens:
                row.advance(token, [], tokenizer)
                if row.done:
                    break
            deltas = [e.text for e in job.events if isinstance(e, batching.Delta)]
            assert stream or len(deltas) == 1
            texts[stream] = "".join(deltas)
        assert texts[True] == texts[False] and texts[False]
        assert ("red" not in texts[False]) if stop else texts[False].endswith("circle")


def test_media_encoded_in_parts_equal_the_whole_batch(model_and_processor):
    """The engine's media encoding split over threads (rows with two images, one, none) gives the visual
    tokens of one encoder call on the whole batch."""
    import io

    import torch
    from PIL import Image
    from serve_helpers import picture

    from flamingo_vlm.serve.metrics import ServeMetrics

    model, processor = model_and_processor
    images = [Image.open(io.BytesIO(picture(seed))).convert("RGB") for seed in range(4)]
    texts = ["<image>a<image>b", "<image>c", "no picture here", "<image>d"]
    batch = processor(texts, images=[images[:2], images[2:3], [], images[3:]])
    inputs = batch["input_ids"], batch["pixel_values"], batch["media_mask"]
    engine = batching.BatchEngine(model, processor, ServeMetrics())
    engine.media_parts = 3
    engine.start()
    try:
        with torch.inference_mode():
            parts = engine._encode_media(*inputs)
            whole = model.encode_media(inputs[0], inputs[1], None, inputs[2])
    finally:
        engine.stop()
    assert parts.shape == whole.shape == (4, 2, *whole.shape[2:])
    torch.testing.assert_close(parts, whole)
