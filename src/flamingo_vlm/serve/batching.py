"""The batching engine: one worker thread owns the model; requests queue up and are decoded together.

Concurrent requests on one model waste it when served one by one: a decoding step of 8 rows costs
barely more than a step of one. The worker takes the first waiting request and the others already
queued (up to ``max_batch_size`` rows, a request with ``n`` choices being ``n`` rows), left-pads their
prompts into one batch and decodes them with the model's cached decoder
(:class:`~flamingo_vlm.model.generation.CachedDecoder`: media encoded once, visual keys/values and the
LM's KV cache kept). Each step streams each row's new text to its request (a reply sent whole gets
its text once, at the end). A row that finishes, or whose client went away, leaves the batch at once
(its caches are cut out), so the others go on at the smaller size; a cancelled request frees its
queue slot immediately.

Requests arriving during a decode join it (continuous batching), in groups: a prefill (vision
encoder, resampler, prompt) costs nearly as much for one request as for eight, so waiting requests
join once they fill the free rows or the oldest has waited ``batch_wait_ms``. Under load (the last
decode served several requests or left some waiting) a new batch also waits for company: until it
has as many rows as the last one had, ``batch_wait_ms`` after its first request's arrival at most;
a lone client never waits. docs/serving.md has the measurements behind both rules.

Rows are independent: a row's tokens depend only on its own prompt and images (left padding is
masked and positions come from the mask), so batched greedy answers equal one-at-a-time answers.
Beam search (``num_beams > 1``) and scoring run one request at a time through ``model.generate`` and
``model.score``, which batch the beams and candidates of that request.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import os
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper
from transformers.cache_utils import DynamicLayer

from flamingo_vlm.model.generation import CachedDecoder, default_stop_ids
from flamingo_vlm.serve.errors import APIError

if TYPE_CHECKING:
    from flamingo_vlm.model import Flamingo
    from flamingo_vlm.processing import FlamingoProcessor
    from flamingo_vlm.serve.metrics import ServeMetrics

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    """A validated prompt, tokenized and with its images transformed: what the model needs of a request."""

    input_ids: torch.Tensor  # (L,)
    pixel_values: torch.Tensor  # (n, t, c, h, w)

    @property
    def prompt_tokens(self) -> int:
        return int(self.input_ids.shape[0])


@dataclass
class Decoding:
    """One request's decoding settings (``temperature`` 0: greedy)."""

    max_new_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    num_beams: int = 1
    n: int = 1


@dataclass
class Delta:
    index: int  # the choice
    text: str


@dataclass
class Finish:
    index: int
    reason: str  # "stop" or "length"
    completion_tokens: int


@dataclass
class Failed:
    error: APIError


@dataclass
class Scored:
    sum_logprobs: list[float]
    mean_logprobs: list[float]
    num_tokens: list[int]


class Job:
    """One request in the engine; its events reach the request's coroutine through an asyncio queue."""

    def __init__(
        self,
        prepared: Prepared,
        decoding: Decoding | None = None,
        candidates: list[list[int]] | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        stream: bool = True,
    ) -> None:
        self.prepared, self.decoding, self.candidates = prepared, decoding, candidates
        self.loop = loop or asyncio.get_running_loop()
        self.stream = stream  # False: the reply is sent whole, so its text is decoded and sent once, at the end
        self.events: asyncio.Queue = asyncio.Queue()
        self.cancelled = threading.Event()
        self.arrived = time.monotonic()
        self.released = False
        self.finished_choices = 0

    @property
    def rows(self) -> int:
        return 1 if self.decoding is None else self.decoding.n

    def emit(self, event: Any) -> None:
        self.loop.call_soon_threadsafe(self.events.put_nowait, event)


class BatchEngine:
    """Runs every model call on one worker thread, batching concurrent generation requests."""

    def __init__(
        self,
        model: Flamingo,
        processor: FlamingoProcessor,
        metrics: ServeMetrics,
        max_batch_size: int = 16,
        batch_wait_ms: float = 5.0,
        queue_size: int = 64,
        continuous: bool = True,
    ) -> None:
        self.model, self.processor, self.metrics = model, processor, metrics
        self.continuous = continuous
        self.max_batch_size, self.batch_wait_s, self.queue_size = max_batch_size, batch_wait_ms / 1000, queue_size
        self.stop_ids = default_stop_ids(model)
        # The worker decodes with its own copy: a Rust tokenizer used by two threads at once can fail
        # ("Already borrowed") while the request threads tokenize prompts.
        self.tokenizer = copy.deepcopy(processor.tokenizer)
        self.device = next(model.parameters()).device
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._held: Job | None = None  # taken from the queue but not fitting the last batch: it opens the next
        self._lock = threading.Lock()
        self._active = 0  # jobs queued or running, cancelled ones excluded
        self._company_rows = 1  # rows a new batch waits for (batch_wait_ms at most): 1 unless the server is busy
        self._thread: threading.Thread | None = None
        self.media_parts = media_parts(self.device)
        self._pool: ThreadPoolExecutor | None = None  # threads encoding the parts of a batch's media

    # ------------------------------------------------------------------ request side

    @property
    def active(self) -> int:
        return self._active

    def submit(self, job: Job) -> None:
        """Queue a job, or refuse it with 503 when ``queue_size`` jobs are already waiting or running."""
        with self._lock:
            if self._active >= self.queue_size:
                raise APIError(503, f"the server is busy ({self._active} requests in flight); retry later",
                               None, "queue_full")  # fmt: skip
            self._active += 1
        self._queue.put(job)

    def cancel(self, job: Job) -> None:
        """The client went away: free the job's slot now; the worker drops its rows at the next step."""
        job.cancelled.set()
        self._release(job)

    def _release(self, job: Job) -> None:
        with self._lock:
            if not job.released:
                job.released = True
                self._active -= 1

    # ------------------------------------------------------------------ worker

    def start(self) -> None:
        if self.media_parts > 1:
            self._pool = ThreadPoolExecutor(self.media_parts, thread_name_prefix="flamingo-serve-media")
        self._thread = threading.Thread(target=self._run, name="flamingo-serve-engine", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=30)
            self._thread = None
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def _gather(self, first: Job) -> tuple[list[Job], bool]:
        """The first job and those already waiting, plus, under load, those arriving until the batch is as
        large as the last one or ``batch_wait_ms`` after the first's arrival (decoding jobs, up to the row cap)."""
        jobs, rows, stopping = [first], first.rows, False
        if not self._batchable(first):
            return jobs, stopping
        company, deadline = min(self._company_rows, self.max_batch_size), first.arrived + self.batch_wait_s
        while rows < self.max_batch_size:
            wait = deadline - time.monotonic() if rows < company else 0.0
            try:
                job = self._queue.get(timeout=max(0.0, wait))
            except queue.Empty:
                break
            if job is None:
                stopping = True
                break
            if not self._batchable(job) or rows + job.rows > self.max_batch_size:
                self._held = job  # first in line for the next batch: it waits one batch at most
                break
            jobs.append(job)
            rows += job.rows
        return jobs, stopping

    @staticmethod
    def _batchable(job: Job) -> bool:
        return job.decoding is not None and job.decoding.num_beams == 1

    def _run(self) -> None:
        while True:
            first, self._held = self._held or self._queue.get(), None
            if first is None:
                return
            jobs, stopping = self._gather(first)
            jobs = [job for job in jobs if not job.cancelled.is_set()]
            if jobs:
                self._serve(jobs)
            if stopping:
                return

    def _serve(self, jobs: list[Job]) -> None:
        try:
            with torch.inference_mode():
                if jobs[0].decoding is None:
                    self._score(jobs[0])
                elif jobs[0].decoding.num_beams > 1:
                    self._beam(jobs[0])
                else:
                    self._decode(jobs)
        except Exception as e:  # a model failure must not kill the worker: every job of the batch learns it
            log.exception("model call failed")
            for job in jobs:
                job.emit(Failed(APIError(500, f"the model failed: {type(e).__name__}", None, "model_error")))
        finally:
            for job in jobs:
                self._release(job)

    # ------------------------------------------------------------------ batching the inputs

    def _collate(self, prepared: list[Prepared]) -> tuple[torch.Tensor, ...]:
        """Left-pad token rows and zero-pad media slots: ``input_ids, attention_mask (B, L)``,
        ``pixel_values (B, n, t, c, h, w)``, ``media_mask (B, n)`` (as ``FlamingoProcessor`` pads)."""
        width = max(p.prompt_tokens for p in prepared)
        n_media = max(p.pixel_values.shape[0] for p in prepared)
        frames = max(p.pixel_values.shape[1] for p in prepared)
        c, h, w = prepared[0].pixel_values.shape[2:]
        b = len(prepared)
        input_ids = torch.full((b, width), self.tokenizer.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((b, width), dtype=torch.long)
        pixel_values = torch.zeros((b, n_media, frames, c, h, w))
        media_mask = torch.zeros((b, n_media), dtype=torch.bool)
        for i, p in enumerate(prepared):
            input_ids[i, width - p.prompt_tokens :] = p.input_ids
            attention_mask[i, width - p.prompt_tokens :] = 1
            m, t = p.pixel_values.shape[:2]
            pixel_values[i, :m, :t] = p.pixel_values
            pixel_values[i, :m, t:] = p.pixel_values[:, -1:]  # short videos repeat their last frame
            media_mask[i, :m] = True
        return tuple(x.to(self.device) for x in (input_ids, attention_mask, pixel_values, media_mask))

    # ------------------------------------------------------------------ greedy and sampled rows, batched

    def _decode(self, jobs: list[Job]) -> None:
        rows, decoder, seqs, mask, logits = self._start(jobs)
        joinable = self.continuous and _joinable(decoder)
        started, generated, served, peak = time.perf_counter(), 0, len(jobs), len(rows)
        while True:
            self.metrics.batch_rows.observe(len(rows))
            peak = max(peak, len(rows))
            logits = logits.float()
            logits[:, self.model.media_token_id] = -float("inf")  # a generated <image> would have no image
            tokens = logits.argmax(-1)  # (B,)
            for i, row in enumerate(rows):
                if row.sampler is not None:
                    tokens[i] = row.sample(seqs[i : i + 1], logits[i : i + 1])
            seqs = torch.cat([seqs, tokens[:, None]], dim=1)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            generated += len(rows)
            for row, token in zip(rows, tokens.tolist()):
                row.advance(token, self.stop_ids, self.tokenizer)
            keep = [i for i, row in enumerate(rows) if not row.done and not row.job.cancelled.is_set()]
            for row in rows:
                if row.done:
                    self._finish_row(row)
            if not keep:
                break
            if len(keep) < len(rows):
                rows, seqs, mask = [rows[i] for i in keep], seqs[keep], mask[keep]
                _select_rows(decoder, keep)
            logits = decoder.step(seqs, mask)
            joining = self._admit(len(rows)) if joinable and self._join_due(len(rows)) else []
            if joining:  # continuous batching: new requests join at this step, their prompts prefilled together
                new_rows, new_decoder, new_seqs, new_mask, new_logits = self._start(joining)
                pad_id = self.tokenizer.pad_token_id
                seqs, mask = _merge_rows(decoder, seqs, mask, new_decoder, new_seqs, new_mask, pad_id)
                rows, logits = rows + new_rows, torch.cat([logits, new_logits])
                self.metrics.joined_rows.inc(len(new_rows))
                served += len(joining)
        busy = served > 1 or self._held is not None or not self._queue.empty()  # others came, or still wait
        self._company_rows = max(peak, 2) if busy else 1
        self.metrics.record_tokens(generated, time.perf_counter() - started)

    def _start(self, jobs: list[Job]) -> tuple[list[_Row], CachedDecoder, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rows of ``jobs`` (one per choice), prefilled together: rows, decoder, sequences, mask, logits."""
        rows = [_Row(job, k, self.device) for job in jobs for k in range(job.decoding.n)]
        input_ids, attention_mask, pixel_values, media_mask = self._collate([row.job.prepared for row in rows])
        visual_tokens = self._encode_media(input_ids, pixel_values, media_mask)  # (B, n, L, d)
        decoder = CachedDecoder(self.model, input_ids, attention_mask, (None, None, None), visual_tokens=visual_tokens)
        return rows, decoder, input_ids, attention_mask, decoder.prefill()  # logits (B, V)

    def _encode_media(
        self, input_ids: torch.Tensor, pixel_values: torch.Tensor, media_mask: torch.Tensor
    ) -> torch.Tensor:
        """The batch's visual tokens (B, n, L, d): its rows split into ``media_parts`` parts encoded at once,
        each on a thread of the pool (the encoder and resampler are compute-bound, and a batch's images cost
        about as much together as one by one, so on a CPU the free cores are what makes them cheaper)."""
        b = input_ids.shape[0]
        if self._pool is None or b < 2:
            return self.model.encode_media(input_ids, pixel_values, None, media_mask)
        bounds = [round(i * b / self.media_parts) for i in range(self.media_parts + 1)]
        parts = [slice(lo, hi) for lo, hi in zip(bounds, bounds[1:]) if hi > lo]

        def encode(rows: slice) -> torch.Tensor:
            with torch.inference_mode():  # a thread-local mode: set on the pool's thread too
                return self.model.encode_media(input_ids[rows], pixel_values[rows], None, media_mask[rows])

        return torch.cat(list(self._pool.map(encode, parts)))  # every part keeps the batch's n media slots

    def _join_due(self, running_rows: int) -> bool:
        """Whether the waiting jobs should join the running decode now: when they fill its free rows, or when
        the oldest has waited ``batch_wait_ms``. Joining in groups pays one prefill (vision encoder, resampler,
        prompt) for the group instead of one per request, which on a busy server costs more than the steps."""
        with self._queue.mutex:  # a look at the waiting jobs, oldest first, without taking them
            waiting = [job for job in self._queue.queue if job is not None and not job.cancelled.is_set()]
        if not waiting:
            return False
        free = self.max_batch_size - running_rows
        return sum(job.rows for job in waiting) >= free or time.monotonic() - waiting[0].arrived >= self.batch_wait_s

    def _admit(self, running_rows: int) -> list[Job]:
        """Waiting decoding jobs that fit beside ``running_rows``, taken without waiting (none while a job is held)."""
        joining, rows = [], running_rows
        while self._held is None:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:  # shutting down: leave the sentinel for the worker loop
                self._queue.put(None)
                break
            if job.cancelled.is_set():
                continue
            if not self._batchable(job) or rows + job.rows > self.max_batch_size:
                self._held = job
                break
            joining.append(job)
            rows += job.rows
        return joining

    def _finish_row(self, row: _Row) -> None:
        job = row.job
        job.emit(Finish(row.index, row.reason, len(row.tokens)))
        job.finished_choices += 1
        if job.finished_choices == job.decoding.n:
            job.emit(None)  # end of the job's events

    # ------------------------------------------------------------------ beam search and scoring, one request each

    def _beam(self, job: Job) -> None:
        d = job.decoding
        input_ids, attention_mask, pixel_values, media_mask = self._collate([job.prepared])
        self.metrics.batch_rows.observe(d.num_beams)
        started = time.perf_counter()
        sequences = self.model.generate(
            input_ids,
            attention_mask,
            pixel_values=pixel_values,
            media_mask=media_mask,
            num_beams=d.num_beams,
            max_new_tokens=d.max_new_tokens,
            eos_token_id=self.stop_ids,
            stop_strings=d.stop or None,
        )
        row = _Row(job, 0, self.device)
        for token in sequences[0, input_ids.shape[1] :].tolist():
            row.advance(token, self.stop_ids, self.tokenizer)
            if row.done:
                break
        if not row.done:  # beam search ended on its own criterion: the answer is complete
            row.done, row.reason = True, "stop"
            row.flush(self.tokenizer, final=True)
        self.metrics.record_tokens(len(row.tokens), time.perf_counter() - started)
        self._finish_row(row)

    def _score(self, job: Job) -> None:
        input_ids, attention_mask, pixel_values, media_mask = self._collate([job.prepared])
        out = self.model.score(
            input_ids, attention_mask, pixel_values=pixel_values, media_mask=media_mask, candidates=[job.candidates]
        )
        job.emit(Scored(out.sum_logprobs[0].tolist(), out.mean_logprobs[0].tolist(), out.num_tokens[0].tolist()))
        job.emit(None)


class _Row:
    """One choice being decoded: its tokens, the text already sent, and how it ends."""

    def __init__(self, job: Job, index: int, device: torch.device) -> None:
        d = job.decoding
        self.job, self.index, self.decoding = job, index, d
        self.tokens: list[int] = []
        self.sent = ""
        self.done, self.reason = False, "length"
        self.sampler: LogitsProcessorList | None = None
        self.generator: torch.Generator | None = None
        if d.temperature > 0:
            self.sampler = LogitsProcessorList()
            if d.temperature != 1.0:
                self.sampler.append(TemperatureLogitsWarper(d.temperature))
            if d.top_p < 1.0:
                self.sampler.append(TopPLogitsWarper(d.top_p))
            if d.seed is not None:  # choice k of a seeded request: seed + k, so choices differ but repeat
                self.generator = torch.Generator(device=device).manual_seed(d.seed + index)
        self.holdback = max((len(s) for s in d.stop), default=1) - 1

    def sample(self, seqs: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """One sampled token for this row: ``seqs (1, T)``, ``logits (1, V)`` → a 0-d tensor."""
        scores = self.sampler(seqs, logits)
        probs = scores.softmax(-1)
        if not torch.isfinite(probs).all():  # a temperature so small that logits / t overflow: that is greedy
            return logits.argmax(-1)[0]
        return torch.multinomial(probs, 1, generator=self.generator)[0, 0]

    def advance(self, token: int, stop_ids: list[int], tokenizer: Any) -> None:
        """Take one new token: end at a stop token, a stop string or ``max_new_tokens``; send new text."""
        self.tokens.append(token)
        if token in stop_ids:
            self.done, self.reason = True, "stop"
            self.flush(tokenizer, final=True, drop_last=True)
            return
        self.done = len(self.tokens) >= self.decoding.max_new_tokens
        if self.done or self.job.stream or self.decoding.stop:  # a whole reply needs its text once, at the end
            self.flush(tokenizer, final=self.done)

    def flush(self, tokenizer: Any, final: bool, drop_last: bool = False) -> None:
        """Send the text that can no longer change: stripped, cut at a stop string, minus a possible stop prefix."""
        text = tokenizer.decode(self.tokens[:-1] if drop_last else self.tokens, skip_special_tokens=True)
        cuts = [text.find(s) for s in self.decoding.stop if s in text]
        if cuts:
            text, final = text[: min(cuts)], True
            self.done, self.reason = True, "stop"
        text = text.lstrip()
        if final:
            text = text.rstrip()
        else:
            text = text[: len(text) - self.holdback] if self.holdback else text
            text = text.rstrip().rstrip("\ufffd")  # an incomplete UTF-8 sequence or trailing space may change
        if (final or self.job.stream) and text.startswith(self.sent) and len(text) > len(self.sent):
            self.job.emit(Delta(self.index, text[len(self.sent) :]))
            self.sent = text


def available_cpus() -> int:
    """The CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def media_parts(device: torch.device) -> int:
    """Into how many parts the engine splits a batch's media for encoding: on a CPU, as many as there are
    CPUs for kernel threads (2 with ``flamingo serve``'s default threads, half the CPUs); on an accelerator,
    whose one encoder call already uses it whole, 1."""
    return max(1, available_cpus() // torch.get_num_threads()) if device.type == "cpu" else 1


def _select_rows(decoder: CachedDecoder, keep: list[int]) -> None:
    """Cut the decoder's caches down to rows ``keep`` (those still decoding)."""
    prompt = decoder.prompt
    index = torch.tensor(keep, device=prompt.media.device)
    prompt.cache.batch_select_indices(index.cpu())  # CPU indices index a cache on any device
    prompt.media, prompt.phi = prompt.media[index], prompt.phi[index.to(prompt.phi.device)]
    prompt.kv_cache = {k: tuple(t[index.to(t.device)] for t in kv) for k, kv in prompt.kv_cache.items()}


def _left_pad(x: torch.Tensor, width: int, dim: int, value: float = 0) -> torch.Tensor:
    """``x`` with zeros (or ``value``) prepended along ``dim`` up to ``width``."""
    missing = width - x.shape[dim]
    if missing <= 0:
        return x
    shape = list(x.shape)
    shape[dim] = missing
    return torch.cat([x.new_full(shape, value), x], dim=dim)


def _right_pad(x: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    missing = width - x.shape[dim]
    if missing <= 0:
        return x
    shape = list(x.shape)
    shape[dim] = missing
    return torch.cat([x, x.new_zeros(shape)], dim=dim)


def _merge_rows(
    decoder: CachedDecoder,
    seqs: torch.Tensor,
    mask: torch.Tensor,
    joining: CachedDecoder,
    new_seqs: torch.Tensor,
    new_mask: torch.Tensor,
    pad_id: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Append ``joining``'s rows to ``decoder``'s: both caches cover all of their sequences, so each side is
    left-padded to the longer length (masked, like a prompt's padding) and media slots are padded with
    zeros that no token attends to (φ never exceeds a row's own media). Returns the merged (seqs, mask)."""
    width = max(seqs.shape[1], new_seqs.shape[1])
    a, b = decoder.prompt, joining.prompt
    counts = (seqs.shape[0], new_seqs.shape[0])
    for la, lb in zip(a.cache.layers, b.cache.layers):  # keys/values (B, h, T, dh)
        la.keys = torch.cat([_left_pad(la.keys, width, 2), _left_pad(lb.keys, width, 2)])
        la.values = torch.cat([_left_pad(la.values, width, 2), _left_pad(lb.values, width, 2)])
    n_media = max(a.media.shape[1], b.media.shape[1])
    a.media = torch.cat([_right_pad(a.media, n_media, 1), _right_pad(b.media, n_media, 1)])  # (B, n, L, d)
    width_kv = n_media * a.media.shape[2]
    merged = {}
    for block in set(a.kv_cache) | set(b.kv_cache):  # keys, values (B, h, n·L, dh); a side may lack a block
        sides = [side.kv_cache.get(block) for side in (a, b)]
        like = next(kv for kv in sides if kv is not None)[0]
        sides = [kv or (like.new_zeros((rows, *like.shape[1:])),) * 2 for kv, rows in zip(sides, counts)]
        merged[block] = tuple(torch.cat([_right_pad(x, width_kv, 2) for x in pair]) for pair in zip(*sides))
    a.kv_cache, a.phi = merged, torch.cat([a.phi, b.phi])
    seqs = torch.cat([_left_pad(seqs, width, 1, pad_id), _left_pad(new_seqs, width, 1, pad_id)])
    mask = torch.cat([_left_pad(mask, width, 1), _left_pad(new_mask, width, 1)])
    return seqs, mask


def _joinable(decoder: CachedDecoder) -> bool:
    """Whether rows can join this decode: the LM's cache must be plain per-layer key/value tensors."""
    layers = getattr(decoder.prompt.cache, "layers", None)
    return bool(layers) and all(isinstance(layer, DynamicLayer) for layer in layers)
