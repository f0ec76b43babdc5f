"""``flamingo serve`` under load: N concurrent clients on loopback, bounded in requests and in time.

Starts the real server (``python -m flamingo_vlm serve``) in a subprocess on a free port, then for each
client count sends chat requests (one image + ``Output:``, greedy, ``max_tokens`` new tokens) from N
threads, each client sending its next request when the last one is answered, until every client has
sent ``--requests`` requests or ``--duration`` seconds have passed. Prints requests/s, p50/p99 latency,
generated tokens/s and errors per client count, and the ratio of the largest count's requests/s to
one client's (target: 8 clients ≥ 3× one client, 0 errors).

    python benchmarks/serve.py [--model DIR] [--clients 1 4 8] [--requests 8] [--duration 60] [--max-tokens 16]

Without ``--model``, the benchmarks' small model (benchmarks/small.py) is built, shrunk to run on a CPU.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from small import build_small_flamingo  # noqa: E402

SMALL_CPU = dict(hidden_size=128, num_layers=2, num_heads=4, image_size=64, patch_size=16)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def image_url(seed: int, size: int = 64) -> str:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def start_server(model_dir: str, port: int, extra: list[str]) -> subprocess.Popen:
    command = [sys.executable, "-m", "flamingo_vlm", "serve", "--model", model_dir, "--port", str(port), *extra]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited: {server.stderr.read().decode()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                return server
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    server.kill()
    raise RuntimeError("the server did not start in 300 s")


def one_request(url: str, image: str, max_tokens: int) -> tuple[float, int]:
    """Latency (s) and generated tokens of one chat request; raises on any error status."""
    body = {
        "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": image}},
                                                  {"type": "text", "text": "Output:"}]}],
        "max_tokens": max_tokens,
        "temperature": 0,
    }  # fmt: skip
    request = urllib.request.Request(
        f"{url}/v1/chat/completions", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=120) as response:
        answer = json.loads(response.read())
    return time.perf_counter() - started, answer["usage"]["completion_tokens"]


def batch_rows(url: str) -> tuple[float, float]:
    """(sum, count) of the server's batch-size histogram."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        text = response.read().decode()
    values = dict(line.rsplit(" ", 1) for line in text.splitlines() if line.startswith("flamingo_batch_rows_"))
    return float(values["flamingo_batch_rows_sum"]), float(values["flamingo_batch_rows_count"])


def run_clients(url: str, clients: int, requests: int, duration: float, max_tokens: int) -> dict:
    # Pictures are encoded before the clock starts: the clients share this process's CPU with nothing else.
    images = [[image_url(1000 * c + r) for r in range(requests)] for c in range(clients)]
    rows_before = batch_rows(url)
    latencies: list[float] = []
    tokens, errors = [0], [0]
    lock = threading.Lock()
    deadline = time.monotonic() + duration

    def client(c: int) -> None:
        for r in range(requests):
            if time.monotonic() > deadline:
                return
            try:
                latency, n = one_request(url, images[c][r], max_tokens)
            except (urllib.error.URLError, OSError, KeyError, ValueError):
                with lock:
                    errors[0] += 1
                continue
            with lock:
                latencies.append(latency)
                tokens[0] += n

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    ordered = sorted(latencies)
    rows_after = batch_rows(url)
    batches = rows_after[1] - rows_before[1]
    return {
        "clients": clients,
        "requests": len(latencies),
        "errors": errors[0],
        "wall_s": round(wall, 2),
        "requests_per_s": round(len(latencies) / wall, 2),
        "p50_s": round(statistics.median(ordered), 3) if ordered else None,
        "p99_s": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 3) if ordered else None,
        "tokens_per_s": round(tokens[0] / wall, 1),
        "mean_batch_rows": round((rows_after[0] - rows_before[0]) / batches, 2) if batches else None,
    }


def median_row(runs: list[dict]) -> dict:
    """The run with the median requests/s (one client count, several rounds), with every round's figure."""
    ordered = sorted(runs, key=lambda r: r["requests_per_s"])
    return {**ordered[len(ordered) // 2], "rounds_requests_per_s": [r["requests_per_s"] for r in runs]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a saved Flamingo directory (default: build the small CPU model)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--requests", type=int, default=8, help="requests per client (bound on count)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per client count (bound on time)")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3, help="runs of every client count, interleaved; medians shown")
    parser.add_argument("--server-args", default="--device cpu", help="extra flags for flamingo serve")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model
        if model_dir is None:
            model = build_small_flamingo(Path(tmp) / "parts", sizes=SMALL_CPU)
            model_dir = os.path.join(tmp, "model")
            model.save_pretrained(model_dir, full=True)
            del model
        port = free_port()
        server = start_server(model_dir, port, args.server_args.split())
        url = f"http://127.0.0.1:{port}"
        try:
            one_request(url, image_url(0), args.max_tokens)  # warm-up
            rounds = [[run_clients(url, n, args.requests, args.duration, args.max_tokens) for n in args.clients]
                      for _ in range(args.rounds)]  # fmt: skip
            rows = [median_row([r[i] for r in rounds]) for i in range(len(args.clients))]
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(
        f"{'clients':>7} {'requests':>8} {'errors':>6} {'req/s':>7} {'p50 s':>7} {'p99 s':>7} {'tok/s':>7} {'batch':>6}"
    )
    for r in rows:
        print(f"{r['clients']:>7} {r['requests']:>8} {r['errors']:>6} {r['requests_per_s']:>7} {r['p50_s']:>7} "
              f"{r['p99_s']:>7} {r['tokens_per_s']:>7} {r['mean_batch_rows']:>6}")  # fmt: skip
    base = next((r for r in rows if r["clients"] == 1), None)
    if base and base["requests_per_s"]:
        top = rows[-1]
        print(f"requests/s at {top['clients']} clients vs 1: {top['requests_per_s'] / base['requests_per_s']:.2f}x "
              f"(target >= 3x with 0 errors)")  # fmt: skip
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
