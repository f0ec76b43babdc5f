"""``flamingo convert ...`` subcommands: other implementations' checkpoints → our format."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    convert = subparsers.add_parser("convert", help="convert checkpoints of other Flamingo implementations")
    commands = convert.add_subparsers(dest="convert_command", required=True)
    of = commands.add_parser(
        "openflamingo",
        help="OpenFlamingo checkpoint.pt -> a flamingo_vlm checkpoint directory",
        description="Map an OpenFlamingo (open-flamingo 2.x) checkpoint onto flamingo_vlm, checking it against "
        "the LM and vision tower it was trained with, and save it with save_pretrained.",
    )
    of.add_argument("checkpoint", help="OpenFlamingo checkpoint (.pt, .bin or .safetensors)")
    of.add_argument("--lm", required=True, help="the LM it was trained on (hub id or directory)")
    of.add_argument("--vision", required=True, help="the HF CLIP vision tower (e.g. openai/clip-vit-large-patch14)")
    of.add_argument("--out", required=True, help="output directory")
    of.add_argument(
        "--cross-attn-every-n-layers",
        type=int,
        default=None,
        help="check against this value (inferred from the checkpoint by default)",
    )
    of.add_argument("--full", action="store_true", help="also copy the LM and vision tower into --out")
    of.set_defaults(func=run_openflamingo)
    gguf = commands.add_parser(
        "gguf",
        help="a GGUF LM -> a plain Hugging Face directory (safetensors weights + tokenizer)",
        description="Dequantize a GGUF causal LM once and save it as an ordinary Hugging Face directory, which "
        "then loads in a fraction of a second wherever an LM is accepted (--lm, model.lm, from_components).",
    )
    gguf.add_argument("source", help="a .gguf file or a packaged name such as smollm2-135m-instruct")
    gguf.add_argument("--out", required=True, help="output directory")
    gguf.set_defaults(func=run_gguf)


def run_openflamingo(args: argparse.Namespace) -> int:
    from flamingo_vlm.convert.openflamingo import from_openflamingo

    model = from_openflamingo(
        args.checkpoint, args.lm, args.vision, cross_attn_every_n_layers=args.cross_attn_every_n_layers
    )
    model.save_pretrained(args.out, full=args.full)
    blocks = model.language_model.xattn_layer_ids
    print(f"converted {args.checkpoint} -> {args.out} ({len(blocks)} cross-attention blocks before layers {blocks})")
    return 0


def run_gguf(args: argparse.Namespace) -> int:
    from flamingo_vlm.model.causal_lm import export_lm

    print(f"converted {args.source} -> {export_lm(args.source, args.out)}")
    return 0
