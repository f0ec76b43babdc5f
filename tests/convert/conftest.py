"""The parity reference (OpenFlamingo's own model) lives in ``benchmarks/``, beside the benchmark that
also uses it: users of the package never need it. The parity tests import it from there."""

import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
if str(BENCHMARKS) not in sys.path:
    sys.path.append(str(BENCHMARKS))  # appended: benchmark modules never shadow installed ones
