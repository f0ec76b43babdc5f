"""Data-pipeline throughput: samples/s per dataset type, with 0 and 2 DataLoader workers.

Synthetic shards (web documents, image–text pairs, video–text pairs) are written to a temporary
directory and read through :class:`flamingo_vlm.data.Mixture` exactly as training reads them,
images transformed to ``--image-size`` by the processor.  The target is that the pipeline feeds at
least 5x what a training step consumes: pass ``--step-time`` (seconds per step of your config) or
let the script time a tiny Flamingo forward/backward at the same image size.

    python benchmarks/data.py [--image-size 224] [--batch-size 8] [--steps 20] [--step-time S]
"""

from __future__ import annotations

import argparse
import io
import itertools
import os
import tempfile
import time

import numpy as np
import torch
import webdataset as wds
from PIL import Image

from flamingo_vlm.data import (
    Document,
    ImageItem,
    ImageTextDataset,
    InterleavedDataset,
    Mixture,
    TextItem,
    VideoTextDataset,
)
from flamingo_vlm.processing import FlamingoProcessor
from flamingo_vlm.tokenization import add_flamingo_tokens, train_bpe_tokenizer
from flamingo_vlm.video import write_video

WORDS = "a red square is above a blue circle and two green triangles move to the left of the grey star".split()


def _jpeg(rng: np.random.Generator, size: int = 256) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _text(rng: np.random.Generator, n: int) -> str:
    return " ".join(rng.choice(WORDS, n))


def write_shards(root: str, records_per_kind: int = 64, shards_per_kind: int = 4) -> dict[str, list[str]]:
    rng = np.random.default_rng(0)
    clip = write_video([rng.integers(0, 255, (128, 128, 3), dtype=np.uint8) for _ in range(10)], fps=1.0)
    makers = {
        "interleaved": lambda i: {
            "json": Document(
                [x for k in range(8) for x in (TextItem(_text(rng, 40)), ImageItem(f"{k}.jpg"))]
            ).to_json(),
            **{f"{k}.jpg": _jpeg(rng) for k in range(8)},
        },
        "image_text": lambda i: {"jpg": _jpeg(rng), "txt": _text(rng, 12)},
        "video_text": lambda i: {"mp4": clip, "txt": _text(rng, 12)},
    }
    shards: dict[str, list[str]] = {}
    for kind, make in makers.items():
        shards[kind] = []
        for s in range(shards_per_kind):
            path = os.path.join(root, f"{kind}-{s:04d}.tar")
            with wds.TarWriter(path) as writer:
                for i in range(records_per_kind // shards_per_kind):
                    writer.write({"__key__": f"{s}_{i}", **make(i)})
            shards[kind].append(path)
    return shards


def measure(dataset, batch_size: int, num_workers: int, steps: int) -> float:
    """Samples/s over ``steps`` batches, after one warm-up batch (worker start-up excluded)."""
    stream = iter(Mixture([(dataset, 1.0, batch_size)], num_workers=num_workers))
    next(stream)
    start = time.perf_counter()
    for _ in itertools.islice(stream, steps):
        pass
    return steps * batch_size / (time.perf_counter() - start)


def tiny_step_time(tokenizer, image_size: int, batch_size: int) -> float | None:
    """Seconds per forward/backward of a tiny Flamingo at ``image_size`` on an interleaved batch, if buildable."""
    try:
        from transformers import GPT2Config, GPT2LMHeadModel

        from flamingo_vlm import Flamingo
        from flamingo_vlm.model.nfnet import NFNetConfig, NFNetEncoder
    except ImportError:
        return None
    lm = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=len(tokenizer),
            n_embd=128,
            n_layer=2,
            n_head=4,
            n_positions=512,
            bos_token_id=tokenizer.eos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    )
    vision = NFNetEncoder(NFNetConfig(image_size=image_size))
    model = Flamingo.from_components(lm=lm, vision=vision, tokenizer=tokenizer, num_latents=16)
    media_id = tokenizer.convert_tokens_to_ids("<image>")
    ids = torch.randint(0, 200, (batch_size, 256))
    ids[:, ::64] = media_id  # 4 images per row
    pixels = torch.randn(batch_size, 4, 1, 3, image_size, image_size)
    mask = torch.ones(batch_size, 4, dtype=torch.bool)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        model(input_ids=ids, pixel_values=pixels, media_mask=mask, labels=ids).loss.backward()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--step-time", type=float, default=None, help="seconds per training step to compare against")
    args = parser.parse_args()

    tokenizer = train_bpe_tokenizer([" ".join(WORDS)] * 8, vocab_size=300)
    add_flamingo_tokens(tokenizer)
    mean = (0.5, 0.5, 0.5)
    transform = FlamingoProcessor(
        tokenizer, image_size=args.image_size, image_mean=mean, image_std=mean
    ).transform_image

    step_time = args.step_time
    if step_time is None:
        try:
            step_time = tiny_step_time(tokenizer, args.image_size, args.batch_size)
            source = "tiny Flamingo forward/backward (interleaved batch)"
        except Exception as e:  # the model is optional here: report throughput regardless
            print(f"(could not time a model step: {e})")
    else:
        source = "--step-time"
    if step_time is not None:
        print(
            f"training step: {step_time * 1000:.1f} ms for batch {args.batch_size} ({source}); "
            f"it consumes {args.batch_size / step_time:.1f} samples/s"
        )

    with tempfile.TemporaryDirectory() as root:
        shards = write_shards(root)
        datasets = {
            "interleaved": InterleavedDataset(shards["interleaved"], tokenizer, transform),
            "image_text": ImageTextDataset(shards["image_text"], tokenizer, transform),
            "video_text": VideoTextDataset(shards["video_text"], tokenizer, transform),
        }
        print(
            f"image size {args.image_size}, batch {args.batch_size}, {args.steps} batches, "
            f"torch threads {torch.get_num_threads()}"
        )
        print(f"{'dataset':<12} {'workers':>7} {'samples/s':>10}" + (f" {'x step need':>11}" if step_time else ""))
        for name, dataset in datasets.items():
            for workers in args.workers:
                rate = measure(dataset, args.batch_size, workers, args.steps)
                ratio = f" {rate * step_time / args.batch_size:>11.1f}" if step_time else ""
                print(f"{name:<12} {workers:>7} {rate:>10.1f}{ratio}")
        if step_time:
            print("target: 'x step need' >= 5 (the pipeline feeds at least 5x what one training step consumes)")


if __name__ == "__main__":
    main()
