"""``flamingo serve``: a saved checkpoint behind an OpenAI-compatible HTTP API (see docs/serving.md)."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import sys
from dataclasses import fields

import torch

from flamingo_vlm.model import Flamingo
from flamingo_vlm.processing import FlamingoProcessor

LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server on this machine."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def default_threads() -> int:
    """Half the CPUs this process may use, at least one: the model's kernels get the threads, the HTTP
    server, the request threads (image decoding, JSON) and the second part of each batch's media encoding
    keep the rest (docs/serving.md: on 2 CPUs, 8 clients were served ~30 % slower with 2 kernel threads)."""
    from flamingo_vlm.serve.batching import available_cpus

    return max(1, available_cpus() // 2)


def build_config(args: argparse.Namespace):
    """The :class:`ServeConfig` the flags describe."""
    from flamingo_vlm.serve.config import ServeConfig
    from flamingo_vlm.serve.limits import ServeLimits
    from flamingo_vlm.serve.mapping import load_prompt_format

    limits = ServeLimits(**{f.name: getattr(args, f.name) for f in fields(ServeLimits)})
    return ServeConfig(
        model_id=args.model_id or args.model.rstrip("/").rsplit("/", 1)[-1],
        api_key=args.api_key,
        allow_remote_images=args.allow_remote_images,
        max_batch_size=args.max_batch_size,
        batch_wait_ms=args.batch_wait_ms,
        limits=limits,
        prompt_format=load_prompt_format(args.prompt_format),
    )


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from flamingo_vlm.serve.app import create_app
    except ImportError as err:
        raise SystemExit(f"flamingo serve needs the serve extra: pip install 'flamingo-vlm[serve]' ({err})") from err
    config = build_config(args)  # before loading the model: a bad flag should not cost a model load
    if args.threads is not None and args.threads < 1:
        raise SystemExit(f"--threads must be at least 1, got {args.threads}")
    if not is_loopback(args.host) and config.api_key is None:
        print(
            f"WARNING: serving on {args.host} without --api-key: anyone who can reach this address can use the model",
            file=sys.stderr,
        )
    logging.basicConfig(level=logging.INFO)
    model = Flamingo.from_pretrained(args.model, lm_dtype=args.lm_dtype, device_map=args.device_map)
    model = model.place(None if model.lm_spread else args.device).eval()
    torch.set_num_threads(args.threads or default_threads())
    app = create_app(model, FlamingoProcessor.from_model(model), config)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    from flamingo_vlm.serve.limits import ServeLimits

    parser = subparsers.add_parser("serve", help="serve a saved model over an OpenAI-compatible HTTP API")
    parser.add_argument("--model", required=True, help="directory written by Flamingo.save_pretrained")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on every route but /health and /")
    parser.add_argument("--model-id", help="the model name the API reports (default: the directory's name)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--lm-dtype", choices=("auto", "fp32", "bf16", "fp16"), help="load the frozen LM in this dtype")
    parser.add_argument("--threads", type=int, help="CPU threads for the model's kernels (default: half the CPUs)")
    parser.add_argument("--device-map", help="spread the frozen LM over devices (accelerate: auto, balanced, …)")
    parser.add_argument(
        "--prompt-format", default="flamingo", help="preset (flamingo, vqa, caption) or a YAML file (docs/serving.md)"
    )
    parser.add_argument("--allow-remote-images", action="store_true", help="fetch http(s) image URLs (off: data URLs)")
    parser.add_argument("--max-batch-size", type=int, default=16, help="rows decoded together")
    parser.add_argument(
        "--batch-wait-ms", type=float, default=20.0, help="how long a request waits for company, under load"
    )
    defaults = ServeLimits()
    for f in fields(ServeLimits):
        flag = "--" + f.name.replace("_", "-")
        parser.add_argument(flag, type=type(getattr(defaults, f.name)), default=getattr(defaults, f.name),
                            help=f"limit (default {getattr(defaults, f.name)})")  # fmt: skip
    parser.set_defaults(func=run)
