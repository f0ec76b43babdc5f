"""The fault campaigns live in ``benchmarks/`` (run on demand); their seeded slices run here."""

import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
if str(BENCHMARKS) not in sys.path:
    sys.path.append(str(BENCHMARKS))  # appended: benchmark modules never shadow installed ones
