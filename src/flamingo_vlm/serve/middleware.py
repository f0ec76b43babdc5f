"""ASGI middleware of the server: the API-key gate with per-route metrics, and the body-size cap.

Pure ASGI rather than ``BaseHTTPMiddleware``, so that a stream's end (and its client's disconnect)
reaches the route itself, and a stream's latency covers the whole stream.
"""

from __future__ import annotations

import hmac
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flamingo_vlm.serve.errors import error_response
from flamingo_vlm.serve.metrics import ServeMetrics

OPEN_PATHS = ("/health", "/")  # the page is static and holds no secret; it sends the key the user types
ROUTES = ("/", "/health", "/metrics", "/v1/models", "/v1/chat/completions", "/v1/completions", "/v1/score")


class Gate:
    """The API key check (before any body is read) and per-route request counts and latency."""

    def __init__(self, app: ASGIApp, api_key: str | None, metrics: ServeMetrics) -> None:
        self.app, self.api_key, self.metrics = app, api_key, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), [500]

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            if self.api_key is not None and scope["path"] not in OPEN_PATHS and not self._authorized(scope):
                response = error_response(401, "missing or invalid API key (Authorization: Bearer KEY)", None,
                                          "invalid_api_key")  # fmt: skip
                await response(scope, receive, send_status)
            else:
                await self.app(scope, receive, send_status)
        finally:
            route = scope["path"] if scope["path"] in ROUTES else "other"
            self.metrics.record_request(route, status[0], time.perf_counter() - started)

    def _authorized(self, scope: Scope) -> bool:
        header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        scheme, _, token = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self.api_key.encode())


class BodySizeLimit:
    """ASGI middleware: refuse a body over ``max_bytes`` with 413 before any handler parses it.

    A declared ``Content-Length`` over the cap is refused without reading; a chunked body is read up
    to the cap and then refused, so no request ever holds more than ``max_bytes`` in memory.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the disconnect, as Starlette expects

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(413, f"the request body exceeds {self.max_bytes} bytes", None, "body_too_large")
        await response(scope, receive, send)
