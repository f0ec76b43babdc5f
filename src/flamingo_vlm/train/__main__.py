"""``torchrun --nproc_per_node=N -m flamingo_vlm.train CONFIG.yaml [key=value ...]``."""

from __future__ import annotations

import argparse
import sys

from flamingo_vlm.train.cli import add_arguments, run_train

if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m flamingo_vlm.train", description="Train Flamingo (torchrun-friendly).")
    add_arguments(parser)
    sys.exit(run_train(parser.parse_args()))
