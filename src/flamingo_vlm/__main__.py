"""``python -m flamingo_vlm ...``: the ``flamingo`` command (the form torchrun launches on each rank)."""

import sys

from flamingo_vlm.cli import main

sys.exit(main())
