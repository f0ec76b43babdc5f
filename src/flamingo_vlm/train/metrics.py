"""Where training metrics go: a JSONL file always; TensorBoard and W&B when installed and asked for."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from flamingo_vlm.io import write_text

logger = logging.getLogger(__name__)


class MetricsLogger:
    """Rank 0 only: every other rank gets a logger that drops everything."""

    def __init__(
        self,
        output_dir: str | Path,
        enabled: bool = True,
        tensorboard: bool = False,
        wandb: bool = False,
        wandb_project: str = "flamingo",
        config: dict[str, Any] | None = None,
        start_step: int | None = None,
    ) -> None:
        """``start_step``: the step training (re)starts from; records after it, written by a run that was
        killed before its next checkpoint, are dropped, so that the resumed run's records replace them
        instead of repeating those steps (and a line torn by the kill goes with them)."""
        self.enabled = enabled
        self._tb = self._wandb = None
        self._file = None
        if not enabled:
            return
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        self.path = output_dir / "metrics.jsonl"
        if start_step is not None and self.path.exists():
            write_text("".join(_records_up_to(self.path, start_step)), self.path)
        self._file = open(self.path, "a", buffering=1)  # line-buffered: readable while training
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(output_dir / "tensorboard"), purge_step=start_step)
            except ImportError:
                logger.warning("logging.tensorboard is on but tensorboard is not installed (pip install tensorboard)")
        if wandb:
            try:
                import wandb as wandb_module

                self._wandb = wandb_module.init(project=wandb_project, dir=str(output_dir), config=config or {})
            except ImportError:
                logger.warning("logging.wandb is on but wandb is not installed (pip install wandb)")

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {"step": step, **{k: _jsonable(v) for k, v in metrics.items()}}
        self._file.write(json.dumps(record) + "\n")
        scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if self._tb is not None:
            for key, value in scalars.items():
                self._tb.add_scalar(key, value, step)
        if self._wandb is not None:
            self._wandb.log(scalars, step=step)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf; keep the file strictly parseable
    return value


def _records_up_to(path: Path, step: int) -> list[str]:
    """The lines of ``path`` that are complete records of steps up to ``step``."""
    kept = []
    for line in path.read_text(errors="replace").splitlines(keepends=True):
        try:
            record = json.loads(line)
        except ValueError:
            continue  # torn by a kill mid-write
        if line.endswith("\n") and isinstance(record, dict) and record.get("step", step + 1) <= step:
            kept.append(line)
    return kept
