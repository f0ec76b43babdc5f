"""Prometheus metrics of one server, in a registry of its own (two apps in one process never mix counts)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class ServeMetrics:
    """Requests by route and status, latency, generated tokens and their rate, batch sizes, joins."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "flamingo_requests", "HTTP requests by route and status", ["route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "flamingo_request_latency_seconds",
            "time from request to the end of the response (streams included)",
            ["route"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )
        self.tokens = Counter("flamingo_generated_tokens", "tokens generated", registry=self.registry)
        self.tokens_per_second = Gauge(
            "flamingo_tokens_per_second", "generated tokens per second of the last batch", registry=self.registry
        )
        self.batch_rows = Histogram(
            "flamingo_batch_rows",
            "rows (choices or beams) decoded together, observed at every decoding step",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=self.registry,
        )

        self.joined_rows = Counter(
            "flamingo_joined_rows", "rows that joined a decode already running", registry=self.registry
        )

    def record_request(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def record_tokens(self, count: int, seconds: float) -> None:
        self.tokens.inc(count)
        if seconds > 0:
            self.tokens_per_second.set(count / seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
