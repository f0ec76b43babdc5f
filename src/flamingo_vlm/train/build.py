"""From a :class:`TrainConfig` to the objects the trainer needs: the model, the data mixture, the probe."""

from __future__ import annotations

import dataclasses
import logging

import torch

from flamingo_vlm.data import (
    ImageTextDataset,
    InterleavedConfig,
    InterleavedDataset,
    Mixture,
    MixtureComponent,
    VideoTextDataset,
)
from flamingo_vlm.data.shards import ShardDataset
from flamingo_vlm.model.flamingo import Flamingo
from flamingo_vlm.processing import FlamingoProcessor
from flamingo_vlm.train.config import DatasetConfig, TrainConfig

logger = logging.getLogger(__name__)


def build_model(config: TrainConfig) -> Flamingo:
    """A fresh Flamingo; seeded so that every rank of a distributed run starts from the same weights."""
    kwargs = config.model.to_dict()
    lm, vision = kwargs.pop("lm"), kwargs.pop("vision")
    if not lm or not vision:
        raise ValueError("model.lm and model.vision must name the frozen LM and vision encoder (path or hub id)")
    torch.manual_seed(config.seed)
    return Flamingo.from_components(lm, vision, **kwargs)


def build_dataset(spec: DatasetConfig, processor: FlamingoProcessor, seed: int) -> ShardDataset:
    tokenizer, transform = processor.tokenizer, processor.transform_image
    common = dict(seed=seed, shuffle_buffer=spec.shuffle_buffer)
    if spec.type == "interleaved":
        config = InterleavedConfig(max_length=spec.max_length, max_images=spec.max_images, p_next=spec.p_next)
        return InterleavedDataset(spec.shards, tokenizer, transform, config, **common)
    if spec.type == "image_text":
        return ImageTextDataset(spec.shards, tokenizer, transform, max_length=spec.max_length, **common)
    if spec.type == "video_text":
        return VideoTextDataset(
            spec.shards,
            tokenizer,
            transform,
            max_length=spec.max_length,
            num_frames=spec.num_frames,
            fps=spec.fps,
            **common,
        )
    raise ValueError(f"unknown dataset type {spec.type!r}")


def build_mixture(config: TrainConfig, model: Flamingo) -> Mixture:
    """The λ-weighted mixture of ``config.data``; shards are split by torch.distributed rank."""
    if not config.data.datasets:
        raise ValueError("data.datasets is empty: list at least one dataset (name, type, shards, weight, batch_size)")
    processor = FlamingoProcessor.from_model(model)
    components = [
        MixtureComponent(
            build_dataset(spec, processor, config.data.seed), spec.weight, spec.batch_size, spec.name, spec.start_step
        )
        for spec in config.data.datasets
    ]
    return Mixture(
        components,
        schedule=config.data.schedule,
        seed=config.data.seed,
        num_workers=config.data.num_workers,
        pin_memory=torch.cuda.is_available(),
    )


def build_probe_batch(config: TrainConfig, model: Flamingo) -> dict[str, torch.Tensor] | None:
    """One labelled batch for the vision-use probe (``logging.probe_every``), or None when it is off.

    ``data.probe`` names held-out shards. Without it the probe reads the first image-text dataset (else
    the first dataset) in another order, so its samples may also be trained on; the log says so.
    """
    if config.logging.probe_every <= 0 or not config.data.datasets:
        return None
    spec = config.data.probe
    if spec is None:
        spec = next((d for d in config.data.datasets if d.type == "image_text"), config.data.datasets[0])
        logger.warning("vision-use probe: no data.probe given, so it reads %r (not held out)", spec.name)
    spec = dataclasses.replace(spec, start_step=0)
    processor = FlamingoProcessor.from_model(model)
    component = MixtureComponent(build_dataset(spec, processor, config.data.seed + 1), 1.0, spec.batch_size, "probe")
    step = next(iter(Mixture([component], seed=config.data.seed + 1, rank=0, world_size=1)))
    return step["probe"][0]


def heldout_batches(spec: DatasetConfig, model: Flamingo, batch_size: int) -> list[dict[str, torch.Tensor]]:
    """Every usable sample of ``spec``'s shards once (one epoch, one slot), in batches of ``batch_size``.

    For scoring on held-out data: fixed and complete, unlike a training stream. A last batch with fewer
    than two samples is dropped (the shuffled probe needs two).
    """
    from flamingo_vlm.data import collate
    from flamingo_vlm.data.shards import Slot

    dataset = build_dataset(dataclasses.replace(spec, shuffle_buffer=1), FlamingoProcessor.from_model(model), seed=0)
    samples = []
    for sample in dataset.samples(Slot(0, 1, 0, 1), seed=0):
        if sample["__position__"].epoch > 0:
            break
        samples.append({k: v for k, v in sample.items() if not k.startswith("__")})
    chunks = [samples[i : i + batch_size] for i in range(0, len(samples), batch_size)]
    return [collate(chunk) for chunk in chunks if len(chunk) >= 2]
