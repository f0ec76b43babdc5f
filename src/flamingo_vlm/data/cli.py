"""``flamingo data ...`` subcommands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from flamingo_vlm.data.build import build_web_shards, find_pages, find_warcs, page_roots
from flamingo_vlm.data.html import ImageFilter
from flamingo_vlm.data.sharding import BuildReport, ShardPlan


def _add_common(parser: argparse.ArgumentParser, prefix: str, unit: str) -> None:
    """Options every shard builder shares: output, shard size and split, image filters."""
    parser.add_argument("-o", "--output", required=True, help="directory for the shards")
    parser.add_argument(
        "--prefix", default=prefix, help=f"shard name prefix (default: {prefix} -> {prefix}-000000.tar)"
    )
    parser.add_argument(
        f"--{unit}-per-shard",
        dest="per_shard",
        type=int,
        default=1000,
        help=f"input {unit} per shard: shard j holds the usable ones among {unit} [j*n, (j+1)*n)",
    )
    parser.add_argument(
        f"--max-images-per-{unit.rstrip('s')}",
        dest="max_images",
        type=int,
        default=100,
        help=f"{unit} with more images are skipped",
    )
    parser.add_argument("--min-image-side", type=int, default=64, help="drop smaller images (pixels)")
    parser.add_argument("--max-aspect-ratio", type=float, default=3.0, help="drop images more elongated than this")
    parser.add_argument("--workers", type=int, default=1, help="processes writing shards (output is the same)")
    parser.add_argument("--shard-index", type=int, default=0, help="this machine's part, in [0, --num-shards)")
    parser.add_argument(
        "--num-shards",
        type=int,
        default=1,
        help="machines splitting the job: part i writes the shards j with j %% k == i",
    )
    parser.add_argument("--no-progress", action="store_true")


def _plan(args: argparse.Namespace) -> ShardPlan:
    return ShardPlan(args.per_shard, args.workers, args.shard_index, args.num_shards)


def _image_filter(args: argparse.Namespace) -> ImageFilter:
    return ImageFilter(min_side=args.min_image_side, max_aspect_ratio=args.max_aspect_ratio)


def _finish(build: Callable[[], BuildReport]) -> int:
    """Run a build and print its summary; exit 1 when nothing was kept, 2 on bad options or unreadable inputs."""
    try:
        report = build()
    except (ValueError, FileNotFoundError) as e:
        print(f"flamingo data: {e}", file=sys.stderr)
        return 2
    print(report.summary())
    return 0 if report.pages_kept else 1


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="build training data shards")
    commands = data.add_subparsers(dest="data_command", required=True)
    web = commands.add_parser(
        "build-web",
        help="HTML pages with local images, or WARC files -> WebDataset shards of interleaved documents",
        description="Parse HTML pages (DOM order, boilerplate removed, paper image filters) and write one "
        "WebDataset record per page: <key>.json (the document) and <key>.<i>.<ext> (image bytes). "
        "WARC files (.warc, .warc.gz): their HTML responses are pages, their images taken from image "
        "responses in the same WARC files.",
    )
    web.add_argument(
        "inputs", nargs="+", help="HTML or WARC files, or directories searched recursively for *.html/*.htm/*.warc(.gz)"
    )
    _add_common(web, "web", "pages")
    web.set_defaults(func=run_build_web)

    mmc4 = commands.add_parser(
        "import-mmc4",
        help="MMC4 jsonl documents -> WebDataset shards of interleaved documents",
        description="Convert Multimodal C4 documents (text_list + image_info) into interleaved document shards; "
        "each image goes before (default, as OpenFlamingo) or after its matched sentence.",
    )
    mmc4.add_argument("inputs", nargs="+", help="*.jsonl / *.jsonl.gz / *.jsonl.zip files or directories")
    mmc4.add_argument("--images", action="append", default=[], help="image folder or .tar image shard (repeatable)")
    mmc4.add_argument(
        "--image-position",
        choices=("before", "after"),
        default="before",
        help="place each image before (OpenFlamingo) or after its matched sentence",
    )
    mmc4.add_argument("--min-similarity", type=float, default=None, help="drop images with a lower matched_sim")
    _add_common(mmc4, "mmc4", "docs")
    mmc4.set_defaults(func=run_import_mmc4)

    obelics = commands.add_parser(
        "import-obelics",
        help="OBELICS parquet rows -> WebDataset shards of interleaved documents",
        description="Convert OBELICS rows (aligned texts/images lists, None filling each gap) into interleaved "
        "document shards, in the rows' order; images embedded, or URLs/names resolved in --images.",
    )
    obelics.add_argument("inputs", nargs="+", help="*.parquet files or directories")
    obelics.add_argument("--images", action="append", default=[], help="image folder or .tar image shard (repeatable)")
    _add_common(obelics, "obelics", "docs")
    obelics.set_defaults(func=run_import_obelics)


def run_build_web(args: argparse.Namespace) -> int:
    return _finish(
        lambda: build_web_shards(
            find_pages(args.inputs),
            args.output,
            prefix=args.prefix,
            pages_per_shard=args.per_shard,
            max_images_per_page=args.max_images,
            image_filter=_image_filter(args),
            progress=not args.no_progress,
            roots=page_roots(args.inputs),
            warcs=find_warcs(args.inputs),
            plan=_plan(args),
        )
    )


def _import_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options every importer takes from the shared flags (see ``_add_common``)."""
    return {
        "images": args.images,
        "prefix": args.prefix,
        "plan": _plan(args),
        "image_filter": _image_filter(args),
        "max_images": args.max_images,
        "progress": not args.no_progress,
    }


def run_import_mmc4(args: argparse.Namespace) -> int:
    from flamingo_vlm.data.mmc4 import import_mmc4

    return _finish(
        lambda: import_mmc4(
            args.inputs,
            args.output,
            image_position=args.image_position,
            min_similarity=args.min_similarity,
            **_import_options(args),
        )
    )


def run_import_obelics(args: argparse.Namespace) -> int:
    from flamingo_vlm.data.obelics import import_obelics  # pyarrow is only needed here

    return _finish(lambda: import_obelics(args.inputs, args.output, **_import_options(args)))
