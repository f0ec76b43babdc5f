"""From a :class:`TrainConfig` to the objects the trainer needs: the model and the data mixture."""

from __future__ import annotations

import torch

from flamingo_vlm.data import ImageTextDataset, InterleavedConfig, InterleavedDataset, Mixture, MixtureComponent, VideoTextDataset
from flamingo_vlm.data.shards import ShardDataset
from flamingo_vlm.model.flamingo import Flamingo
from flamingo_vlm.processing import FlamingoProcessor
from flamingo_vlm.train.config import DatasetConfig, TrainConfig


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
        return VideoTextDataset(spec.shards, tokenizer, transform, max_length=spec.max_length,
                                num_frames=spec.num_frames, fps=spec.fps, **common)  # fmt: skip
    raise ValueError(f"unknown dataset type {spec.type!r}")


def build_mixture(config: TrainConfig, model: Flamingo) -> Mixture:
    """The λ-weighted mixture of ``config.data``; shards are split by torch.distributed rank."""
    if not config.data.datasets:
        raise ValueError("data.datasets is empty: list at least one dataset (name, type, shards, weight, batch_size)")
    processor = FlamingoProcessor.from_model(model)
    components = [
        MixtureComponent(build_dataset(spec, processor, config.data.seed), spec.weight, spec.batch_size, spec.name)
        for spec in config.data.datasets
    ]
    return Mixture(components, schedule=config.data.schedule, seed=config.data.seed,
                   num_workers=config.data.num_workers, pin_memory=torch.cuda.is_available())  # fmt: skip
