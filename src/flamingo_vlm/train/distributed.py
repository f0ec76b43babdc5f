"""torchrun integration: process group, device, and DDP / FSDP2 wrapping of a Flamingo.

FSDP2 (``fully_shard``) shards each frozen decoder layer and each gated block as its own unit, so
only one layer's full weights exist at a time. Flamingo specifics:

- each block's cross-attention is a unit of its own whose ``project_media`` is registered as a
  forward method, because the decoder-layer pre-hook projects the visual keys/values *before*
  calling the block, outside any FSDP forward;
- the frozen vision encoder is left unsharded and replicated (``ignored_params``): it is small
  next to the LM, needs no gradient reduction, and the feature cache can call it directly;
- an LM loaded in bf16/fp16 (``lm_dtype``) keeps that dtype in its decoder-layer units (nearly all of
  its weights), but FSDP2 all-gathers a unit's parameters as one flat buffer of one dtype, and the root
  unit holds fp32 trainable parts next to the LM's embeddings, final norm and head: those few frozen
  tensors are upcast to fp32 (0.26B parameters for a 32k-vocabulary 7B LM, 1.1B for Qwen2.5-7B's 152k
  vocabulary; sharded like the rest).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from flamingo_vlm.model.language import find_decoder_layers


@dataclass(frozen=True)
class DistributedEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: str = "auto", timeout: timedelta | None = None) -> DistributedEnv:
    """Join the torchrun process group if there is one (NCCL on GPU, gloo on CPU); ``timeout`` bounds each
    collective (default: torch's)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    target = torch.device(device)
    if target.type == "cuda" and target.index is None:
        target = torch.device("cuda", local_rank)
        torch.cuda.set_device(target)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if target.type == "cuda" else "gloo", timeout=timeout)
    return DistributedEnv(rank, world_size, local_rank, target)


def is_distributed() -> bool:
    """Whether a process group is up: every collective below is a no-op without one."""
    return dist.is_available() and dist.is_initialized()


def teardown() -> None:
    if is_distributed():
        dist.destroy_process_group()


def resolve_strategy(strategy: str, world_size: int) -> str:
    if strategy == "auto":
        return "ddp" if world_size > 1 else "none"
    if strategy in ("ddp", "fsdp") and world_size == 1:
        return strategy if is_distributed() else "none"
    return strategy


def shard_flamingo(model: nn.Module, env: DistributedEnv) -> nn.Module:
    """FSDP2: one unit per decoder layer, per gated block (+ its cross-attention), vision, and root."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    mesh = init_device_mesh(env.device.type, (env.world_size,))
    vision = set(model.vision.parameters())
    layers = find_decoder_layers(model.lm, model.config.decoder_layers_attr)
    upcast_root_parameters(model, skip=[layers, model.vision])
    for layer in layers:
        fully_shard(layer, mesh=mesh)
    for block in model.language_model.gated_xattn:
        fully_shard(block.attn, mesh=mesh)
        register_fsdp_forward_method(block.attn, "project_media")
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh, ignored_params=vision)
    return model


def upcast_root_parameters(model: nn.Module, skip: list[nn.Module]) -> int:
    """Cast every non-fp32 floating parameter outside the ``skip`` modules to fp32, keeping tied ones
    tied (one new Parameter per old one); returns how many tensors were cast."""
    skipped = {id(m) for s in skip for m in s.modules()}
    new: dict[int, nn.Parameter] = {}
    for module in model.modules():
        if id(module) in skipped:
            continue
        for name, param in list(module.named_parameters(recurse=False)):
            if not param.is_floating_point() or param.dtype == torch.float32:
                continue
            if id(param) not in new:
                new[id(param)] = nn.Parameter(param.detach().float(), requires_grad=param.requires_grad)
            setattr(module, name, new[id(param)])
    return len(new)


def wrap(model: nn.Module, strategy: str, env: DistributedEnv) -> nn.Module:
    """The module the training loop calls; ``model`` must already be on ``env.device``."""
    if strategy == "none":
        return model
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [env.device.index] if env.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)
    if strategy == "fsdp":
        return shard_flamingo(model, env)
    raise ValueError(f"strategy must be 'none', 'ddp' or 'fsdp', got {strategy!r}")


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """A DTensor's full value (collective: every rank must call it); a plain tensor as it is."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum over ranks (identity without a process group); ``values`` is modified in place."""
    if is_distributed():
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def barrier() -> None:
    """Wait for every rank (nothing to wait for without a process group)."""
    if is_distributed():
        dist.barrier()


def broadcast_object(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (any picklable object); ``value`` itself without a process group."""
    if not is_distributed():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
