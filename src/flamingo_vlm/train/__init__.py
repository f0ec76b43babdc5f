"""Training: the paper's optimisation recipe, exact resume, torchrun DDP/FSDP2, progress and logs."""

from flamingo_vlm.train.checkpoint import CheckpointManager
from flamingo_vlm.train.config import TrainConfig
from flamingo_vlm.train.trainer import NonFiniteLossError, StepResult, Trainer

__all__ = ["CheckpointManager", "NonFiniteLossError", "StepResult", "TrainConfig", "Trainer"]
