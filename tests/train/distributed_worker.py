"""Run under ``torchrun --nproc_per_node=2``: DDP then FSDP2, 5 steps each, on one shared global batch.

Every rank builds the same global steps (a world_size=1 mixture) and trains on its share of the rows,
so the losses must match a single process training on the whole global batch. Then each strategy's
final checkpoint is reloaded into a fresh model and compared with the trained weights.
Usage: distributed_worker.py SPEC.json (written by test_distributed.py); rank 0 writes RESULT.json.
"""

from __future__ import annotations

import itertools
import json
import sys

import torch
import torch.distributed as dist

from flamingo_vlm.train import TrainConfig, Trainer, distributed
from flamingo_vlm.train.build import build_model


def global_steps(config: TrainConfig, model, count: int) -> list[dict]:
    """The first ``count`` steps of the config's mixture as one process would read them."""
    from flamingo_vlm.data import Mixture, MixtureComponent
    from flamingo_vlm.processing import FlamingoProcessor
    from flamingo_vlm.train.build import build_dataset

    processor = FlamingoProcessor.from_model(model)
    components = [
        MixtureComponent(build_dataset(d, processor, 0), d.weight, d.batch_size, d.name) for d in config.data.datasets
    ]
    return list(itertools.islice(Mixture(components, rank=0, world_size=1), count))


def shard_rows(step: dict, rank: int, world_size: int) -> dict:
    return {name: ({k: v[rank::world_size] for k, v in batch.items()}, w) for name, (batch, w) in step.items()}


def full_trainable(trainer: Trainer) -> dict[str, torch.Tensor]:
    return trainer.checkpoints.full_trainable_state(trainer.flamingo)


def main(spec_path: str) -> None:
    spec = json.loads(open(spec_path).read())
    env = distributed.setup("cpu")
    results = {}
    for strategy in ("ddp", "fsdp"):
        config = TrainConfig.from_dict(
            {**spec["config"], "strategy": strategy, "output_dir": f"{spec['out']}/{strategy}"}
        )
        model = build_model(config)
        steps = [shard_rows(s, env.rank, env.world_size) for s in global_steps(config, model, config.max_steps)]
        trainer = Trainer(model, config, steps, env)
        trainer.fit()
        trained = full_trainable(trainer)

        fresh = Trainer(build_model(config), config, steps, env)
        assert fresh.resume(), "no checkpoint to resume from"
        reloaded = full_trainable(fresh)
        if env.is_main:
            metrics = [json.loads(line) for line in open(f"{config.output_dir}/metrics.jsonl")]
            results[strategy] = {
                "losses": [{k: v for k, v in m.items() if k.startswith("loss/")} for m in metrics],
                "reload_max_diff": max((trained[n] - reloaded[n]).abs().max().item() for n in trained),
                "reloaded_step": fresh.state.step,
                "checkpoint": trainer.summary()["checkpoint"]
                or f"{config.output_dir}/checkpoints/step-{config.max_steps:08d}",
            }
        dist.barrier()
    if env.is_main:
        with open(spec["result"], "w") as f:
            json.dump(results, f)
    distributed.teardown()


if __name__ == "__main__":
    main(sys.argv[1])
