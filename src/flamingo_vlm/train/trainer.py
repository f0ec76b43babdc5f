"""The training loop: λ-weighted accumulation over datasets, one clip per step, clean NaN skips.

One optimiser step takes one batch from every dataset (or one dataset, round-robin), splits each
into ``grad_accum`` micro-batches, and accumulates

    ∇ Σ_m λ_m · (Σ_tokens NLL_m) / N_m

where N_m is dataset m's number of loss tokens over the *whole* step — all micro-batches and all
ranks. Normalising by the global count (instead of averaging per-micro-batch or per-rank means)
makes the gradient independent of how the batch is split: 1 process × batch B, 2 ranks × B/2 and
4 micro-batches × B/4 all give the same update. Gradients are clipped once, after accumulation;
a non-finite loss or gradient norm throws the whole step away (no optimiser or scheduler step).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch.nn.utils import clip_grad_norm_
from tqdm.auto import tqdm

from flamingo_vlm.io import write_text
from flamingo_vlm.model.flamingo import Flamingo
from flamingo_vlm.model.loss import num_loss_tokens
from flamingo_vlm.model.vision_use import VisionUse, measure_vision_use
from flamingo_vlm.train import distributed
from flamingo_vlm.train.checkpoint import CheckpointManager
from flamingo_vlm.train.config import TrainConfig, resolve_precision
from flamingo_vlm.train.memory import checkpoint_decoder_layers
from flamingo_vlm.train.metrics import MetricsLogger
from flamingo_vlm.train.optim import build_optimizer, build_scheduler
from flamingo_vlm.train.vision_feature_cache import VisionFeatureCache

logger = logging.getLogger(__name__)

Batch = dict[str, torch.Tensor]
Step = Mapping[str, tuple[Batch, float]]  # dataset name → (batch, λ), as yielded by Mixture


class NonFiniteLossError(RuntimeError):
    """Too many consecutive steps had a non-finite loss or gradient: the run cannot recover."""


@dataclass
class StepResult:
    losses: dict[str, float]  # per dataset, token-mean NLL over the global step batch
    grad_norm: float  # before clipping; nan when the step was skipped
    tokens: int  # non-padding tokens, all ranks
    samples: int  # sequences, all ranks
    skipped: bool
    lr: float = math.nan  # the learning rate this step used

    @property
    def loss(self) -> float:
        """Not λ-weighted: the plain mean of the datasets' losses, for a quick look at progress."""
        return sum(self.losses.values()) / max(len(self.losses), 1)


@dataclass
class TrainerState:
    step: int = 0  # steps consumed (including skipped ones)
    optimizer_steps: int = 0
    skipped_steps: int = 0
    consecutive_skips: int = 0
    tokens_seen: int = 0
    samples_seen: int = 0
    train_time: float = 0.0  # seconds spent in steps, across resumes
    last_losses: dict[str, float] = field(default_factory=dict)
    last_vision: dict[str, Any] = field(default_factory=dict)  # the latest vision-use probe


def split_batch(batch: Batch, parts: int) -> list[Batch]:
    """``parts`` micro-batches along the batch dimension (all tensors split alike)."""
    if parts == 1:
        return [batch]
    b = next(iter(batch.values())).shape[0]
    if b % parts:
        raise ValueError(f"a batch of {b} rows cannot be split into {parts} micro-batches (optim.grad_accum)")
    chunks = {k: v.chunk(parts) for k, v in batch.items()}
    return [{k: c[i] for k, c in chunks.items()} for i in range(parts)]


class Trainer:
    """Trains the trainable parts of a :class:`Flamingo` on an iterable of mixture steps.

    ``steps`` is anything yielding ``{name: (batch, λ)}`` — a :class:`~flamingo_vlm.data.Mixture` or
    an in-memory list. If it has ``state_dict``/``load_state_dict`` its position is checkpointed and
    a resumed run continues the same stream. Under torchrun each rank passes its own share of the
    data (the mixture splits shards by rank) and ``config.strategy`` picks DDP or FSDP2.
    """

    def __init__(
        self,
        model: Flamingo,
        config: TrainConfig,
        steps: Iterable[Step],
        env: distributed.DistributedEnv | None = None,
        probe: Batch | None = None,
    ) -> None:
        """``probe``: a labelled batch on which every ``logging.probe_every`` steps the log records whether
        the model uses its images (:func:`~flamingo_vlm.model.vision_use.measure_vision_use`)."""
        self.config = config
        self.probe = probe
        self.env = env or distributed.setup(config.device)
        self.steps = steps
        self.flamingo = model.to(self.env.device)
        self.flamingo.train()
        if config.activation_checkpointing:
            checkpoint_decoder_layers(self.flamingo)
        self.strategy = distributed.resolve_strategy(config.strategy, self.env.world_size)
        bf16 = resolve_precision(config.precision, self.env.device) == "bf16"
        self.autocast_dtype = torch.bfloat16 if bf16 else None
        if bf16 and self.strategy != "fsdp":  # FSDP2 shards frozen and trained weights together: one dtype
            # The frozen parts stored in bf16: autocast would otherwise cast every weight at every call.
            self.flamingo.lm.to(torch.bfloat16)
            self.flamingo.vision.to(torch.bfloat16)
        lm_dtypes = {p.dtype for p in self.flamingo.lm.parameters()}
        if self.strategy == "fsdp" and lm_dtypes != {torch.float32} and not bf16:
            # FSDP2 keeps the root unit's frozen tensors (embeddings, head) in fp32 next to the bf16/fp16 layers
            # (distributed.upcast_root_parameters): only autocast makes the two meet.
            raise ValueError(
                f"strategy fsdp with the LM stored in {sorted(map(str, lm_dtypes))} needs precision: bf16 "
                "(autocast), or model.lm_dtype: fp32"
            )
        self.model = distributed.wrap(self.flamingo, self.strategy, self.env)
        self.params = [p for p in self.flamingo.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(self.flamingo, config.optim)
        self.scheduler = build_scheduler(self.optimizer, config.optim, config.max_steps)
        self.feature_cache = (
            VisionFeatureCache(config.feature_cache, self.flamingo.vision) if config.feature_cache else None
        )
        self.output_dir = Path(config.output_dir)
        self.checkpoints = CheckpointManager(
            self.output_dir / "checkpoints", config.checkpoint.keep_last, sharded=self.strategy == "fsdp"
        )
        self.state = TrainerState()

    # ------------------------------------------------------------------------------ one step

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.env.device.type, dtype=self.autocast_dtype)

    def _gradient_sync(self, enabled: bool):
        """DDP/FSDP reduce gradients only on the step's last backward; earlier ones just accumulate."""
        if self.strategy == "ddp" and not enabled:
            return self.model.no_sync()
        if self.strategy == "fsdp":
            self.model.set_requires_gradient_sync(enabled)
        return contextlib.nullcontext()

    def _nll_sum(self, batch: Batch) -> torch.Tensor:
        batch = {k: v.to(self.env.device, non_blocking=True) for k, v in batch.items()}
        with self._autocast():  # cache misses are encoded at the training precision too
            if self.feature_cache is not None and "pixel_values" in batch:
                batch = {k: v.to(self.env.device) for k, v in self.feature_cache.replace_pixels(batch).items()}
            return self.model(**batch, loss_reduction="sum", return_logits=False).loss

    def compute_gradients(self, step: Step) -> StepResult:
        """Accumulate the step's λ-weighted gradient into ``.grad`` (nothing is zeroed or clipped)."""
        names = list(step)
        accum = self.config.optim.grad_accum
        work = [
            (i, micro, weight) for i, (batch, weight) in enumerate(step.values()) for micro in split_batch(batch, accum)
        ]
        # (datasets,) loss tokens, tokens, samples: all global, so every rank scales identically
        counts = torch.tensor(
            [
                [num_loss_tokens(b["labels"]), int(b["attention_mask"].sum()), b["input_ids"].shape[0]]
                for b, _ in step.values()
            ],
            dtype=torch.float64,
        )
        distributed.all_reduce_sum(counts)
        nll = torch.zeros(len(names), dtype=torch.float64)
        for n, (i, micro, weight) in enumerate(work):
            with self._gradient_sync(n == len(work) - 1):
                micro_nll = self._nll_sum(micro)
                # DDP and FSDP average gradients over ranks: × world_size undoes it.
                scale = weight * self.env.world_size / max(counts[i, 0].item(), 1.0)
                (micro_nll * scale).backward()
            nll[i] += micro_nll.detach().double().cpu()
        distributed.all_reduce_sum(nll)
        losses = {name: (nll[i] / max(counts[i, 0].item(), 1.0)).item() for i, name in enumerate(names)}
        tokens, samples = int(counts[:, 1].sum()), int(counts[:, 2].sum())
        return StepResult(losses, math.nan, tokens, samples, skipped=False)

    def train_step(self, step: Step) -> StepResult:
        """One optimiser step (or a clean skip when the loss or the gradient is not finite)."""
        self.optimizer.zero_grad(set_to_none=True)
        result = self.compute_gradients(step)
        group = self.optimizer.param_groups[0]
        result.lr = group["lr"] / group["lr_scale"]  # the base learning rate (before per-group multipliers)
        finite = all(math.isfinite(v) for v in result.losses.values())
        if finite:
            max_norm = self.config.optim.grad_clip if self.config.optim.grad_clip is not None else math.inf
            norm = clip_grad_norm_(self.params, max_norm)  # once, on the fully accumulated gradient
            result.grad_norm = float(distributed.full_tensor(norm))
            finite = math.isfinite(result.grad_norm)
        if finite:
            self.optimizer.step()
            self.scheduler.step()
            self.state.optimizer_steps += 1
            self.state.consecutive_skips = 0
        else:
            result.skipped = True
            self.state.skipped_steps += 1
            self.state.consecutive_skips += 1
            logger.warning(
                "step %d: non-finite loss or gradient (losses %s, grad norm %s): step skipped (%d in a row)",
                self.state.step,
                result.losses,
                result.grad_norm,
                self.state.consecutive_skips,
            )
            if self.state.consecutive_skips >= self.config.max_consecutive_skips:
                raise NonFiniteLossError(
                    f"{self.state.consecutive_skips} consecutive steps had a non-finite loss or gradient "
                    f"(last losses: {result.losses}); lower optim.lr, check the data for bad values, or use "
                    "precision: fp32"
                )
        self.optimizer.zero_grad(set_to_none=True)  # a skipped step leaves nothing behind
        return result

    # ------------------------------------------------------------------------------ checkpoints

    def save_checkpoint(self) -> Path:
        rank_state = {"data": self.steps.state_dict()} if hasattr(self.steps, "state_dict") else {}
        trainer_state = {
            "trainer": vars(self.state),
            "scheduler": self.scheduler.state_dict(),
            "world_size": self.env.world_size,
            "strategy": self.strategy,
            "config": self.config.to_dict(),
        }
        return self.checkpoints.save(self.state.step, self.flamingo, self.optimizer, trainer_state, rank_state)

    def resume(self) -> bool:
        """Restore the latest usable checkpoint; False when there is none (fresh start)."""
        restored = self.checkpoints.load_latest(self.flamingo, self.optimizer)
        if restored is None:
            return False
        saved = restored.trainer_state
        if saved["world_size"] != self.env.world_size:
            raise ValueError(
                f"{restored.path} was written by {saved['world_size']} ranks; resume with the same number "
                f"(got {self.env.world_size}): the data split depends on it"
            )
        self.scheduler.load_state_dict(saved["scheduler"])
        self.state = TrainerState(**saved["trainer"])
        if hasattr(self.steps, "load_state_dict") and "data" in restored.rank_state:
            self.steps.load_state_dict(restored.rank_state["data"])
        elif self.state.step:
            logger.warning("the training data has no state_dict(): it restarts from its beginning")
        logger.info("resumed from %s at step %d", restored.path, self.state.step)
        return True

    # ------------------------------------------------------------------------------ loop

    def fit(self) -> dict[str, Any]:
        """Train until ``max_steps``, checkpointing every ``checkpoint.every`` steps and at the end."""
        cfg, main = self.config, self.env.is_main
        if cfg.resume:
            self.resume()
        if main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), self.output_dir / "config.yaml")
        metrics = MetricsLogger(
            self.output_dir,
            enabled=main,
            tensorboard=cfg.logging.tensorboard,
            wandb=cfg.logging.wandb,
            wandb_project=cfg.logging.wandb_project,
            config=cfg.to_dict(),
            start_step=self.state.step,
        )
        bar = tqdm(
            total=cfg.max_steps,
            initial=self.state.step,
            desc="train",
            unit="step",
            disable=not (main and cfg.logging.progress),
            dynamic_ncols=True,
        )
        window = {"tokens": 0, "samples": 0, "time": 0.0}
        iterator = iter(self.steps)
        last_checkpoint = None
        try:
            while self.state.step < cfg.max_steps:
                begin = time.perf_counter()
                result = self.train_step(next(iterator))
                elapsed = time.perf_counter() - begin
                self.state.step += 1
                self.state.train_time += elapsed
                self.state.tokens_seen += result.tokens
                self.state.samples_seen += result.samples
                if not result.skipped:
                    self.state.last_losses = result.losses
                window = {
                    "tokens": window["tokens"] + result.tokens,
                    "samples": window["samples"] + result.samples,
                    "time": window["time"] + elapsed,
                }
                if self.state.step % cfg.logging.every == 0 or self.state.step == cfg.max_steps:
                    record = self._record(result, window)
                    if self._probe_due():
                        self.state.last_vision = self.measure_vision_use().record()
                        record.update(self.state.last_vision)
                    metrics.log(self.state.step, record)
                    shown = {
                        k.split("/")[-1]: f"{v:.3f}"
                        for k, v in record.items()
                        if k.startswith("loss/") or k == "vision/gap_shuffled"
                    }
                    bar.set_postfix(shown | {"tok/s": f"{record['tokens_per_s']:.0f}"}, refresh=False)
                    window = {"tokens": 0, "samples": 0, "time": 0.0}
                bar.update(1)
                if self.state.step % cfg.checkpoint.every == 0 or self.state.step == cfg.max_steps:
                    last_checkpoint = self.save_checkpoint()
        finally:
            bar.close()
            metrics.close()
        summary = self.summary(last_checkpoint)
        if main:
            write_text(json.dumps(summary, indent=1) + "\n", self.output_dir / "summary.json")
            logger.info("training finished: %s", summary)
        return summary

    def _probe_due(self) -> bool:
        every, step = self.config.logging.probe_every, self.state.step
        return self.probe is not None and every > 0 and (step % every == 0 or step in (1, self.config.max_steps))

    def measure_vision_use(self) -> VisionUse:
        """The probe batch's NLL with its images, shuffled and blanked; gates and update ratios."""
        batch = {k: v.to(self.env.device) for k, v in self.probe.items()}
        with self._autocast():
            return measure_vision_use(self.flamingo, batch)

    def _record(self, result: StepResult, window: dict[str, float]) -> dict[str, Any]:
        seconds = max(window["time"], 1e-9)
        record: dict[str, Any] = {f"loss/{name}": value for name, value in result.losses.items()}
        record.update(
            lr=result.lr,
            grad_norm=result.grad_norm,
            tokens_per_s=window["tokens"] / seconds,
            samples_per_s=window["samples"] / seconds,
            skipped_steps=self.state.skipped_steps,
            skipped=result.skipped,
        )
        data_skips = getattr(self.steps, "skipped", None)
        if data_skips:
            record["data_skipped"] = {name: dict(counts) for name, counts in data_skips.items() if counts}
        if self.feature_cache is not None:
            record["feature_cache"] = {"hits": self.feature_cache.hits, "misses": self.feature_cache.misses}
        return record

    def summary(self, checkpoint: Path | None = None) -> dict[str, Any]:
        s = self.state
        seconds = max(s.train_time, 1e-9)
        return {
            "steps": s.step,
            "optimizer_steps": s.optimizer_steps,
            "skipped_steps": s.skipped_steps,
            "final_losses": s.last_losses,
            "vision_use": s.last_vision,
            "tokens_seen": s.tokens_seen,
            "train_time_s": round(s.train_time, 3),
            "tokens_per_s": s.tokens_seen / seconds,
            "samples_per_s": s.samples_seen / seconds,
            "checkpoint": str(checkpoint) if checkpoint else None,
            "world_size": self.env.world_size,
            "strategy": self.strategy,
        }
