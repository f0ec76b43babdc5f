"""``flamingo generate``: ask a saved checkpoint about images from the shell."""

from __future__ import annotations

import argparse
import os

import torch

from flamingo_vlm.model import Flamingo
from flamingo_vlm.model.generation import default_stop_ids
from flamingo_vlm.processing import FlamingoProcessor, field_labels


def answer(
    model: Flamingo,
    processor: FlamingoProcessor,
    prompt: str,
    media: list,
    num_beams: int = 3,
    max_new_tokens: int = 20,
) -> str:
    """The model's answer to one interleaved prompt (media given in ``<image>`` order).

    Like the evaluation harness, generation stops at ``<|endofchunk|>``, a line break or the prompt's
    next field label, which is cut off: a model trained on quiz pages goes on with ``Question: …``
    after ``"<image>Question: … Answer: orange"``, and only ``orange`` answers the question.
    """
    device = next(model.parameters()).device
    labels = field_labels(prompt)
    batch = processor([prompt], images=[media]).to(device)
    sequences = model.generate(
        **batch,
        num_beams=num_beams,
        max_new_tokens=max_new_tokens,
        eos_token_id=default_stop_ids(model),
        stop_strings=[*labels, "\n"],
    )
    return processor.batch_decode(sequences, prompt_length=batch["input_ids"].shape[1], stop_labels=labels)[0]


def run(args: argparse.Namespace) -> int:
    missing = [path for path in args.image if not os.path.isfile(path)]
    if missing:  # before loading the model: a typo in a path should not cost a model load
        raise ValueError(f"--image: no such file {missing[0]!r}")
    model = Flamingo.from_pretrained(args.model, lm_dtype=args.lm_dtype, device_map=args.device_map)
    model = model.place(None if model.lm_spread else args.device).eval()
    processor = FlamingoProcessor.from_model(model)
    prompt = args.prompt if args.prompt is not None else "<image>Output:" * len(args.image)
    print(answer(model, processor, prompt, list(args.image), args.num_beams, args.max_new_tokens))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("generate", help="continue an interleaved prompt with a saved model")
    parser.add_argument("--model", required=True, help="directory written by Flamingo.save_pretrained")
    parser.add_argument("--image", nargs="*", default=[], help="image or video files, in <image> order")
    parser.add_argument("--prompt", help='e.g. "<image>Question: what colour is it? Answer:" (default: <image>Output:)')
    parser.add_argument("--num-beams", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=20)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--lm-dtype", choices=("auto", "fp32", "bf16", "fp16"), help="load the frozen LM in this dtype")
    parser.add_argument(
        "--device-map", help="spread the frozen LM over devices (accelerate: auto, balanced, sequential)"
    )
    parser.set_defaults(func=run)
