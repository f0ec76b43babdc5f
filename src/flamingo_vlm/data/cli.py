"""``flamingo data ...`` subcommands."""

from __future__ import annotations

import argparse

from flamingo_vlm.data.build import build_web_shards, find_pages, page_roots
from flamingo_vlm.data.html import ImageFilter


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="build training data shards")
    commands = data.add_subparsers(dest="data_command", required=True)
    web = commands.add_parser(
        "build-web",
        help="HTML pages with local images -> WebDataset shards of interleaved documents",
        description="Parse HTML pages (DOM order, boilerplate removed, paper image filters) and write one "
        "WebDataset record per page: <key>.json (the document) and <key>.<i>.<ext> (image bytes).",
    )
    web.add_argument("inputs", nargs="+", help="HTML files or directories searched recursively for *.html/*.htm")
    web.add_argument("-o", "--output", required=True, help="directory for the shards")
    web.add_argument("--prefix", default="web", help="shard name prefix (default: web -> web-000000.tar)")
    web.add_argument("--pages-per-shard", type=int, default=1000)
    web.add_argument("--max-images-per-page", type=int, default=100, help="pages with more images are skipped")
    web.add_argument("--min-image-side", type=int, default=64, help="drop smaller images (pixels)")
    web.add_argument("--max-aspect-ratio", type=float, default=3.0, help="drop images more elongated than this")
    web.add_argument("--no-progress", action="store_true")
    web.set_defaults(func=run_build_web)


def run_build_web(args: argparse.Namespace) -> int:
    report = build_web_shards(
        find_pages(args.inputs),
        args.output,
        prefix=args.prefix,
        pages_per_shard=args.pages_per_shard,
        max_images_per_page=args.max_images_per_page,
        image_filter=ImageFilter(min_side=args.min_image_side, max_aspect_ratio=args.max_aspect_ratio),
        progress=not args.no_progress,
        roots=page_roots(args.inputs),
    )
    print(report.summary())
    return 0 if report.pages_kept else 1
