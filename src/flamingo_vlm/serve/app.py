"""The FastAPI application: OpenAI-compatible routes over the batching engine, the page, health and metrics.

Routes: ``POST /v1/chat/completions`` and ``POST /v1/completions`` (OpenAI's shapes, streaming as
server-sent events), ``POST /v1/score`` (rank continuations by log-likelihood), ``GET /v1/models``,
``GET /health``, ``GET /metrics`` (Prometheus) and the page at ``/``. Requests are validated and their
images decoded on request threads; only ready tensors reach the engine, so a bad request fails alone
and never inside a batch.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool

from flamingo_vlm.serve.batching import BatchEngine, Decoding, Delta, Failed, Finish, Job, Prepared, Scored
from flamingo_vlm.serve.config import ServeConfig
from flamingo_vlm.serve.errors import APIError, install_error_handlers
from flamingo_vlm.serve.mapping import ImageRef, chat_to_prompt
from flamingo_vlm.serve.media import load_image
from flamingo_vlm.serve.metrics import ServeMetrics
from flamingo_vlm.serve.middleware import BodySizeLimit, Gate
from flamingo_vlm.serve.schema import ChatCompletionRequest, CompletionRequest, SamplingRequest, ScoreRequest

DISCONNECT_POLL_S = 0.25

if TYPE_CHECKING:
    from flamingo_vlm.model import Flamingo
    from flamingo_vlm.processing import FlamingoProcessor


class _Server:
    """The routes' shared state: model, processor, config and engine."""

    def __init__(self, model: Flamingo, processor: FlamingoProcessor, config: ServeConfig) -> None:
        self.model, self.processor, self.config, self.limits = model, processor, config, config.limits
        self.metrics = ServeMetrics()
        self.engine = BatchEngine(
            model, processor, self.metrics, config.max_batch_size, config.batch_wait_ms, config.limits.queue_size
        )
        self.tokenize_lock = threading.Lock()  # see BatchEngine.tokenizer: one thread in the tokenizer at a time

    # ------------------------------------------------------------------ validation

    def prepare(self, prompt: str, refs: list[ImageRef], where: str) -> Prepared:
        """Decode the images and tokenize the prompt under the caps (runs on a request thread)."""
        if len(refs) > self.limits.max_images:
            raise APIError(413, f"{len(refs)} images exceed the cap of {self.limits.max_images} per request", where,
                           "too_many_images")  # fmt: skip
        images = [load_image(ref, self.limits, self.config.allow_remote_images) for ref in refs]
        with self.tokenize_lock:
            try:
                batch = self.processor([prompt], images=[images])
            except ValueError as e:
                raise APIError(400, f"{where}: {e}", where) from e
        input_ids = batch["input_ids"][0]  # (L,)
        if input_ids.numel() == 0:
            raise APIError(400, f"{where}: the prompt is empty", where)
        if input_ids.numel() > self.limits.max_prompt_tokens:
            raise APIError(413, f"the prompt has {input_ids.numel()} tokens, more than the cap of "
                                f"{self.limits.max_prompt_tokens}", where, "prompt_too_long")  # fmt: skip
        return Prepared(input_ids, batch["pixel_values"][0])

    def decoding(self, req: SamplingRequest, max_tokens: int | None, prepared: Prepared) -> Decoding:
        """The request's decoding settings, each checked against the caps and the LM's length."""
        limits = self.limits
        if max_tokens is not None and max_tokens > limits.max_tokens:
            raise APIError(400, f"max_tokens {max_tokens} exceeds the cap of {limits.max_tokens}", "max_tokens")
        room = (self.model.max_length or 1 << 30) - prepared.prompt_tokens
        if room < 1 or (max_tokens is not None and max_tokens > room):
            message = (
                f"the prompt ({prepared.prompt_tokens} tokens) plus max_tokens exceeds the model's "
                f"{self.model.max_length} positions"
            )
            raise APIError(400, message, "max_tokens", "context_length_exceeded")
        if req.n > limits.max_n:
            raise APIError(400, f"n={req.n} exceeds the cap of {limits.max_n}", "n")
        if req.num_beams > limits.max_num_beams:
            raise APIError(400, f"num_beams={req.num_beams} exceeds the cap of {limits.max_num_beams}", "num_beams")
        temperature = req.temperature or 0.0
        if req.num_beams > 1 and (temperature > 0 or req.n > 1):
            raise APIError(400, "num_beams > 1 is deterministic: use it with temperature 0 and n = 1", "num_beams")
        return Decoding(
            max_new_tokens=min(max_tokens or limits.max_tokens, room),
            temperature=temperature,
            top_p=1.0 if req.top_p is None else req.top_p,
            stop=req.stop_list(),
            seed=req.seed,
            num_beams=req.num_beams,
            n=req.n,
        )

    # ------------------------------------------------------------------ running a job

    async def results(self, job: Job, request: Request | None = None) -> AsyncIterator[Any]:
        """The job's events until its end. The job is cancelled (its slot freed, its rows dropped) when the
        consumer stops early or, with ``request``, when the client disconnects, checked every 0.25 s even
        while no text is ready to send. The job must have been submitted."""
        getter: asyncio.Future | None = None
        try:
            while True:
                getter = getter or asyncio.ensure_future(job.events.get())
                done, _ = await asyncio.wait({getter}, timeout=None if request is None else DISCONNECT_POLL_S)
                if not done:
                    if await request.is_disconnected():
                        return
                    continue
                event, getter = getter.result(), None
                if event is None:
                    return
                if isinstance(event, Failed):
                    raise event.error
                yield event
        finally:
            if getter is not None:
                getter.cancel()
            if not job.released:
                self.engine.cancel(job)

    async def generate(self, request: Request, req: SamplingRequest, prompt: str, refs: list[ImageRef], where: str,
                       max_tokens: int | None, shape: _Shape) -> Response:  # fmt: skip
        prepared = await run_in_threadpool(self.prepare, prompt, refs, where)
        decoding = self.decoding(req, max_tokens, prepared)
        job = Job(prepared, decoding, stream=bool(req.stream))
        self.engine.submit(job)  # 503 here, before any byte of a stream is sent
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            return StreamingResponse(
                self._sse(shape, job, self.results(job, request), include_usage),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache"},
            )
        texts, reasons, tokens = [""] * decoding.n, ["length"] * decoding.n, 0
        async for event in self.results(job, request):
            if isinstance(event, Delta):
                texts[event.index] += event.text
            elif isinstance(event, Finish):
                reasons[event.index], tokens = event.reason, tokens + event.completion_tokens
        return JSONResponse(
            {
                **shape.envelope(False),
                "choices": [shape.choice(i, t, r) for i, (t, r) in enumerate(zip(texts, reasons))],
                "usage": _usage(prepared.prompt_tokens, tokens),
            }
        )

    async def _sse(self, shape: _Shape, job: Job, events: AsyncIterator[Any], include_usage: bool):
        head, tokens = shape.envelope(True), 0
        extra = {"usage": None} if include_usage else {}
        if shape.role_first:
            for i in range(job.decoding.n):
                yield _event({**head, "choices": [shape.delta(i, "", None, first=True)], **extra})
        try:
            async for event in events:
                if isinstance(event, Delta):
                    yield _event({**head, "choices": [shape.delta(event.index, event.text, None)], **extra})
                elif isinstance(event, Finish):
                    tokens += event.completion_tokens
                    yield _event({**head, "choices": [shape.delta(event.index, "", event.reason)], **extra})
        except APIError as err:  # the status line is sent: report in the stream, as OpenAI does
            yield _event(err.body())
            return
        finally:  # a disconnect cancels this generator here: cancel the job at once, freeing its slot
            if not job.released:
                self.engine.cancel(job)
        if include_usage:
            yield _event({**head, "choices": [], "usage": _usage(job.prepared.prompt_tokens, tokens)})
        yield "data: [DONE]\n\n"


class _Shape:
    """The response objects of chat (``chat.completion``) or raw completions (``text_completion``)."""

    def __init__(self, chat: bool, model_id: str) -> None:
        self.chat, self.model_id, self.role_first = chat, model_id, chat
        self.id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        self.created = int(time.time())

    def envelope(self, chunk: bool) -> dict:
        kind = ("chat.completion.chunk" if chunk else "chat.completion") if self.chat else "text_completion"
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model_id}

    def choice(self, index: int, text: str, reason: str) -> dict:
        if self.chat:
            return {"index": index, "message": {"role": "assistant", "content": text}, "logprobs": None,
                    "finish_reason": reason}  # fmt: skip
        return {"index": index, "text": text, "logprobs": None, "finish_reason": reason}

    def delta(self, index: int, text: str, reason: str | None, first: bool = False) -> dict:
        if self.chat:
            delta = {"role": "assistant", "content": ""} if first else ({"content": text} if text else {})
            return {"index": index, "delta": delta, "logprobs": None, "finish_reason": reason}
        return {"index": index, "text": text, "logprobs": None, "finish_reason": reason}


def _usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}  # fmt: skip


def _event(payload: dict) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


def _page() -> str:
    return resources.files("flamingo_vlm.serve").joinpath("page.html").read_text(encoding="utf-8")


def create_app(model: Flamingo, processor: FlamingoProcessor, config: ServeConfig | None = None) -> FastAPI:
    """The server's ASGI app; the engine's worker starts and stops with the app's lifespan."""
    config = config or ServeConfig()
    server = _Server(model, processor, config)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        server.engine.start()
        try:
            yield
        finally:
            await asyncio.to_thread(server.engine.stop)

    app = FastAPI(title="flamingo_vlm", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.server = server
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=config.limits.max_body_bytes)
    app.add_middleware(Gate, api_key=config.api_key, metrics=server.metrics)  # outermost: no body read unauthorized
    media_token, eoc_token = processor.config.media_token, processor.config.eoc_token

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request, req: ChatCompletionRequest) -> Response:
        prompt, refs = chat_to_prompt(req.messages, config.prompt_format, media_token, eoc_token)
        max_tokens = req.max_completion_tokens or req.max_tokens
        return await server.generate(request, req, prompt, refs, "messages", max_tokens, _Shape(True, config.model_id))

    @app.post("/v1/completions")
    async def completions(request: Request, req: CompletionRequest) -> Response:
        refs = [ImageRef(url, f"images[{i}]") for i, url in enumerate(req.images)]
        return await server.generate(
            request, req, req.prompt, refs, "prompt", req.max_tokens, _Shape(False, config.model_id)
        )

    @app.post("/v1/score")
    async def score(request: Request, req: ScoreRequest) -> Response:
        if len(req.candidates) > config.limits.max_candidates:
            raise APIError(413, f"{len(req.candidates)} candidates exceed the cap of {config.limits.max_candidates}",
                           "candidates", "too_many_candidates")  # fmt: skip
        refs = [ImageRef(url, f"images[{i}]") for i, url in enumerate(req.images)]
        prepared = await run_in_threadpool(server.prepare, req.prompt, refs, "prompt")
        with server.tokenize_lock:
            try:
                candidates = processor.tokenize_candidates([req.candidates])[0]
            except ValueError as e:
                raise APIError(400, f"candidates: {e}", "candidates") from e
        if any(processor.media_token_id in c for c in candidates):
            raise APIError(400, f"candidates must not contain {media_token!r}", "candidates")
        longest = max(len(c) for c in candidates)
        if model.max_length is not None and prepared.prompt_tokens + longest > model.max_length:
            raise APIError(400, f"the prompt plus the longest candidate exceeds the model's {model.max_length} "
                                "positions", "candidates", "context_length_exceeded")  # fmt: skip
        scored, job = None, Job(prepared, candidates=candidates)
        server.engine.submit(job)
        async for event in server.results(job, request):
            if isinstance(event, Scored):
                scored = event
        keys = scored.sum_logprobs if req.rank_by == "sum" else scored.mean_logprobs
        ranking = sorted(range(len(candidates)), key=lambda k: -keys[k])
        data = [
            {
                "index": k,
                "candidate": req.candidates[k],
                "sum_logprob": scored.sum_logprobs[k],
                "mean_logprob": scored.mean_logprobs[k],
                "num_tokens": scored.num_tokens[k],
                "rank": ranking.index(k) + 1,
            }  # fmt: skip
            for k in range(len(candidates))
        ]
        return JSONResponse({"object": "score", "model": config.model_id, "rank_by": req.rank_by, "data": data,
                             "ranking": ranking, "usage": _usage(prepared.prompt_tokens, 0)})  # fmt: skip

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": config.model_id, "object": "model", "created": 0,
                                            "owned_by": "flamingo_vlm"}]}  # fmt: skip

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "in_flight": server.engine.active}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(server.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        return HTMLResponse(_page())

    return app
