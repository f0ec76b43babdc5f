"""The reliability campaign: broken inputs on every path, SIGKILL during training, evaluation and data building,
untrusted files.

    python benchmarks/faults.py                       # every campaign, full size, seed 0
    python benchmarks/faults.py --campaign fuzz --seed 3 --scale 0.2

Seeded and bounded (every case has a time limit; ``--scale`` sizes the campaigns: the test suite runs a small
slice of each). Prints one table, writes it with the failures to ``--out``, and exits non-zero if anything
crashed, hung or was lost. What each campaign proves: docs/reliability.md.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from faults_common import Row, table  # noqa: E402

CAMPAIGNS = {
    "fuzz": "faults_fuzz",  # malformed records through every input path
    "kill": "faults_kill",  # SIGKILL during training and build-web, a full disk during a save
    "eval-kill": "faults_eval_kill",  # SIGKILL during flamingo eval, then --resume
    "untrusted": "faults_untrusted",  # pickle payloads, path traversal, oversized and deeply nested JSON
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--campaign", nargs="+", choices=sorted(CAMPAIGNS), default=list(CAMPAIGNS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=float, default=1.0, help="campaign size (1.0: full; the tests run ~0.2)")
    parser.add_argument("--workdir", default=None, help="scratch directory (default: a temporary one)")
    parser.add_argument("--out", default="runs/faults", help="where table.md and results.json are written")
    args = parser.parse_args()

    rows: list[Row] = []
    seconds = {}
    with tempfile.TemporaryDirectory(dir=args.workdir) as scratch:
        for name in args.campaign:
            start = time.perf_counter()
            work = Path(scratch) / name
            work.mkdir()
            rows += importlib.import_module(CAMPAIGNS[name]).run(args.seed, args.scale, work)
            seconds[name] = round(time.perf_counter() - start, 1)
            print(f"{name}: {seconds[name]} s", flush=True)
    report = table(rows)
    print(report)
    failures = [f"{r.campaign}/{r.path}: {f}" for r in rows for f in r.failures]
    print("\n".join(["", f"{len(failures)} failure(s)", *failures[:50]]))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(report + "\n")
    record = {
        "seed": args.seed,
        "scale": args.scale,
        "seconds": seconds,
        "rows": [
            {**{k: v for k, v in vars(r).items() if k != "skips"}, "skips": dict(r.skips), "lost": r.lost} for r in rows
        ],
    }
    (out / "results.json").write_text(json.dumps(record, indent=1) + "\n")
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
