"""Load OpenFlamingo checkpoints (``open-flamingo`` 2.x, Awadalla et al. 2023) into flamingo_vlm.

OpenFlamingo is Flamingo with a few choices of its own. Each is a :class:`FlamingoConfig` option,
so a converted checkpoint runs through our own modules (cached generation and all) and produces
OpenFlamingo's logits:

=============================  ==========================  ===================================
choice                         flamingo_vlm default        OpenFlamingo
=============================  ==========================  ===================================
FFW activation                 squared ReLU (paper)        GELU (``activation="gelu"``)
resampler time embeddings      learned, one per frame      none (``resampler_time_embeddings``)
blocks, every n layers         before layers 0, n, 2n...   before layers n-1, 2n-1... (offset)
heads × dim_head               configurable                8 × 64, fixed in its code
=============================  ==========================  ===================================

Everything else is the same math: pre-LayerNorm on the latents, the media and the text (never on
the visual keys), keys/values of the resampler over [media; latents], tanh gates, a token seeing
only the image of its last ``<image>`` (the ``<image>`` token included), and zero cross-attention
output (but the gated FFW) for text before the first image.

Checkpoint layout (``torch.save`` of ``model.state_dict()``, filtered by its trainer):
``perceiver.*``, ``lang_encoder.<decoder layers>.<i>.gated_cross_attn_layer.*`` and the LM's
embedding matrices, in which only the ``<|endofchunk|>`` and ``<image>`` rows were trained. Unfiltered
state dicts (duplicated ``gated_cross_attn_layers.*``/``old_decoder_blocks.*``, the frozen LM and
the vision encoder) load too: frozen LM weights are checked against ``lm``, vision weights ignored.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from flamingo_vlm.io import load_tensors
from flamingo_vlm.model.flamingo import Flamingo
from flamingo_vlm.model.language import DECODER_LAYER_PATHS, find_decoder_layers
from flamingo_vlm.tokenization import EOC_TOKEN, MEDIA_TOKEN

logger = logging.getLogger(__name__)

OPENFLAMINGO_DIM_HEAD = 64  # hard-coded in open_flamingo/src/helpers.py (heads = inner width / 64)
# A block or a frozen decoder layer, under its FlamingoLayer name or its duplicate registration.
_BLOCK = re.compile(
    r"^(?:(?P<path>.+)\.(?P<layer>\d+)\.gated_cross_attn_layer|gated_cross_attn_layers\.(?P<dup>\d+))\.(?P<rest>.+)$"
)
_LM_LAYER = re.compile(
    r"^(?:(?P<path>.+)\.(?P<layer>\d+)\.decoder_layer|old_decoder_blocks\.(?P<dup>\d+))\.(?P<rest>.+)$"
)


@dataclass
class OpenFlamingoCheckpoint:
    """An OpenFlamingo state dict sorted by what each tensor is, duplicates merged."""

    perceiver: dict[str, torch.Tensor] = field(default_factory=dict)  # "layers.0.0.to_q.weight" → tensor
    blocks: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)  # decoder layer → block weights
    lm: dict[str, torch.Tensor] = field(default_factory=dict)  # frozen LM weights under their HF names
    decoder_path: str | None = None  # e.g. "model.decoder.layers", when the keys name it
    num_vision_keys: int = 0
    unexpected: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, state: Mapping[str, torch.Tensor]) -> OpenFlamingoCheckpoint:
        ckpt = cls()
        lm_layers: dict[tuple[int, str], torch.Tensor] = {}
        for key, tensor in state.items():
            if key.startswith("perceiver."):
                ckpt.perceiver[key.removeprefix("perceiver.")] = tensor
            elif key.startswith("vision_encoder."):
                ckpt.num_vision_keys += 1
            elif key.startswith("lang_encoder."):
                name = key.removeprefix("lang_encoder.")
                if m := _BLOCK.match(name):
                    block = ckpt.blocks.setdefault(int(m["layer"] or m["dup"]), {})
                    _put_once(block, m["rest"], tensor, key)
                    ckpt.decoder_path = m["path"] or ckpt.decoder_path
                elif m := _LM_LAYER.match(name):
                    _put_once(lm_layers, (int(m["layer"] or m["dup"]), m["rest"]), tensor, key)
                    ckpt.decoder_path = m["path"] or ckpt.decoder_path
                else:
                    ckpt.lm[name] = tensor
            else:
                ckpt.unexpected.append(key)
        if lm_layers and ckpt.decoder_path is None:
            raise ValueError("the checkpoint has old_decoder_blocks.* but never names the LM's decoder layer path")
        for (layer, rest), tensor in lm_layers.items():
            ckpt.lm[f"{ckpt.decoder_path}.{layer}.{rest}"] = tensor
        return ckpt


def _put_once(into: dict, name, tensor: torch.Tensor, key: str) -> None:
    """OpenFlamingo registers blocks and LM layers twice; both copies must be the same tensor."""
    if name in into and not torch.equal(into[name], tensor):
        raise ValueError(f"{key} differs from its duplicate under another name: the checkpoint is inconsistent")
    into[name] = tensor


def load_openflamingo_state_dict(checkpoint: str | Path | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A ``checkpoint.pt`` / ``.bin`` / ``.safetensors`` file, or a state dict, as a plain state dict.

    Training checkpoints wrap the weights in ``{"model_state_dict": ...}`` with DDP's ``module.``
    prefix; released ones are the bare dict. Both are accepted.
    """
    if isinstance(checkpoint, Mapping):
        state = dict(checkpoint)
    else:
        path = Path(checkpoint)
        if not path.is_file():
            raise ValueError(f"OpenFlamingo checkpoint {path} does not exist")
        state = load_tensors(path)  # .pt checkpoints with weights_only=True: no code is ever unpickled
    for wrapper in ("model_state_dict", "state_dict"):
        if wrapper in state and isinstance(state[wrapper], Mapping):
            state = dict(state[wrapper])
    return {key.removeprefix("module."): value for key, value in state.items()}


def _placement(layers: list[int], num_layers: int, every: int | None) -> int:
    """OpenFlamingo's ``cross_attn_every_n_layers`` from the layers that hold blocks, checked."""
    if not layers:
        raise ValueError("the checkpoint has no gated cross-attention blocks (no *.gated_cross_attn_layer.* keys)")
    every = layers[0] + 1 if every is None else every
    expected = [i for i in range(num_layers) if (i + 1) % every == 0]  # open_flamingo/src/flamingo_lm.py
    if layers != expected:
        raise ValueError(
            f"the checkpoint has blocks before decoder layers {layers}, but OpenFlamingo with "
            f"cross_attn_every_n_layers={every} on this {num_layers}-layer LM puts them before {expected}: "
            "wrong --lm or wrong cross_attn_every_n_layers"
        )
    return every


def _heads(inner: int, what: str) -> int:
    if inner % OPENFLAMINGO_DIM_HEAD:
        raise ValueError(f"{what} inner width {inner} is not a multiple of OpenFlamingo's dim_head 64")
    return inner // OPENFLAMINGO_DIM_HEAD


def openflamingo_config(ckpt: OpenFlamingoCheckpoint, num_layers: int, every: int | None) -> dict[str, Any]:
    """FlamingoConfig fields that reproduce the checkpoint's architecture and OpenFlamingo's math."""
    p = ckpt.perceiver
    required = ["latents", "layers.0.0.to_q.weight", "layers.0.1.1.weight"]
    if missing := [f"perceiver.{k}" for k in required if k not in p]:
        raise ValueError(f"not an OpenFlamingo checkpoint: missing {missing}")
    if "media_time_embs" in p:
        raise ValueError("perceiver.media_time_embs (per-slot media embeddings) have no flamingo_vlm equivalent")
    num_latents, d_vis = p["latents"].shape
    layer_ids = sorted(ckpt.blocks)
    every = _placement(layer_ids, num_layers, every)
    block = ckpt.blocks[layer_ids[0]]
    if "attn.to_q.weight" not in block or "ff.1.weight" not in block:
        raise ValueError(f"the block before decoder layer {layer_ids[0]} lacks attn.to_q.weight or ff.1.weight")
    x_inner, d_text = block["attn.to_q.weight"].shape
    frames = p.get("frame_embs")
    return dict(
        num_latents=num_latents,
        resampler_depth=1 + max(int(k.split(".")[1]) for k in p if k.startswith("layers.")),
        resampler_heads=_heads(p["layers.0.0.to_q.weight"].shape[0], "the resampler's"),
        resampler_dim_head=OPENFLAMINGO_DIM_HEAD,
        resampler_ff_mult=p["layers.0.1.1.weight"].shape[0] // d_vis,
        max_frames=1 if frames is None else frames.shape[0],  # OpenFlamingo only runs 1-frame media
        resampler_time_embeddings=frames is not None,
        cross_attn_every=every,
        cross_attn_offset=every - 1,
        xattn_heads=_heads(x_inner, "the cross-attention's"),
        xattn_dim_head=OPENFLAMINGO_DIM_HEAD,
        xattn_ff_mult=block["ff.1.weight"].shape[0] // d_text,
        activation="gelu",
        media_attention="previous",  # only_attend_immediate_media=True, the only mode its Flamingo builds
    )


def _names_by_tensor(lm: nn.Module) -> dict[int, set[str]]:
    names: dict[int, set[str]] = {}
    for name, param in lm.named_parameters(remove_duplicate=False):
        names.setdefault(id(param), set()).add(name)
    return names


def _differs(theirs: torch.Tensor, ours: torch.Tensor) -> bool:
    """Loose on purpose: a bf16 copy of the same LM passes, a different LM does not."""
    return theirs.shape != ours.shape or not torch.allclose(theirs.float(), ours.float(), rtol=1e-2, atol=1e-3)


def _trainable_state(model: Flamingo, ckpt: OpenFlamingoCheckpoint) -> dict[str, torch.Tensor]:
    """Our trainable state dict from the checkpoint, after checking its frozen LM weights against ours."""
    lm = model.lm
    new = model.language_model.new_tokens
    first, n_new = new.first_id, new.num_new
    names = _names_by_tensor(lm)
    input_names = names[id(lm.get_input_embeddings().weight)]
    output_names = names.get(id(getattr(lm.get_output_embeddings(), "weight", None)), set())

    state = {f"resampler.{'time_embeddings' if k == 'frame_embs' else k}": v for k, v in ckpt.perceiver.items()}
    for block_id, layer in enumerate(model.language_model.xattn_layer_ids):
        for rest, tensor in ckpt.blocks[layer].items():
            state[f"language_model.gated_xattn.{block_id}.{rest}"] = tensor

    ours_frozen = lm.state_dict()
    differing, unexpected = [], []
    for name, tensor in ckpt.lm.items():
        if name in input_names | output_names:
            if tensor.shape[0] < first + n_new:
                raise ValueError(
                    f"lang_encoder.{name} has {tensor.shape[0]} rows; the tokenizer puts {EOC_TOKEN} and "
                    f"{MEDIA_TOKEN} at {first}..{first + n_new - 1}: the tokenizer does not belong to this checkpoint"
                )
            if _differs(tensor[:first], ours_frozen[name][:first]):
                differing.append(f"lang_encoder.{name}[:{first}]")
            rows = tensor[first : first + n_new]
            if name in input_names:
                state["language_model.new_tokens.input"] = rows
            if name in output_names and not new.tied:
                state["language_model.new_tokens.output"] = rows
        elif name not in ours_frozen:
            unexpected.append(f"lang_encoder.{name}")
        elif _differs(tensor, ours_frozen[name]):
            differing.append(f"lang_encoder.{name}")
    if unexpected or ckpt.unexpected:
        raise ValueError(f"unexpected keys in the OpenFlamingo checkpoint: {sorted(ckpt.unexpected + unexpected)}")
    if differing:
        raise ValueError(
            f"the checkpoint's copy of the frozen LM differs from the LM given ({len(differing)} tensors, e.g. "
            f"{differing[:5]}): it was trained on another LM"
        )
    output_key = "language_model.new_tokens.output"
    if output_key in model.added_state_dict() and output_key not in state:
        # OpenFlamingo never trains (nor saves) the output rows of an untied LM: it draws them at random
        # each time it loads. Ours keep their mean-of-vocabulary initialisation.
        logger.warning(
            "the checkpoint has no output-embedding rows for %s/%s (OpenFlamingo re-draws them at random on "
            "every load); using the mean of the LM's output embeddings instead",
            MEDIA_TOKEN,
            EOC_TOKEN,
        )
        state[output_key] = new.output.detach().clone()

    expected = model.added_state_dict()
    missing = sorted(set(expected) - set(state))
    if missing:
        raise ValueError(f"the OpenFlamingo checkpoint lacks weights for {missing}")
    extra = sorted(set(state) - set(expected))
    if extra:
        raise ValueError(f"unexpected weights in the OpenFlamingo checkpoint (as flamingo_vlm names): {extra}")
    return state


def _openflamingo_tokenizer(tokenizer, lm_ref: str):
    """The LM's tokenizer with OpenFlamingo's tokens added in OpenFlamingo's order (ids must match)."""
    if tokenizer is None:
        if not lm_ref:
            raise ValueError("the LM was passed as a module without a name_or_path; pass tokenizer= too")
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(lm_ref)
    missing = [t for t in (EOC_TOKEN, MEDIA_TOKEN) if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing})
    return tokenizer


def from_openflamingo(
    checkpoint: str | Path | Mapping[str, torch.Tensor],
    lm: str | nn.Module,
    vision: str | nn.Module,
    *,
    tokenizer=None,
    cross_attn_every_n_layers: int | None = None,
    lm_kwargs: dict[str, Any] | None = None,
) -> Flamingo:
    """A :class:`Flamingo` that computes what the OpenFlamingo ``checkpoint`` computes.

    ``lm``: the LM it was trained on (e.g. ``anas-awadalla/mpt-7b``); ``vision``: the matching HF
    CLIP vision tower (``openai/clip-vit-large-patch14`` for every released checkpoint).
    ``cross_attn_every_n_layers`` is inferred from the checkpoint and only checked when given.
    """
    ckpt = OpenFlamingoCheckpoint.parse(load_openflamingo_state_dict(checkpoint))
    if isinstance(lm, nn.Module):
        lm_model = lm
    else:
        from transformers import AutoModelForCausalLM

        lm_model = AutoModelForCausalLM.from_pretrained(lm, **(lm_kwargs or {}))
    model_type = getattr(lm_model.config, "model_type", None)
    path = ckpt.decoder_path if ckpt.decoder_path != DECODER_LAYER_PATHS.get(model_type) else None
    num_layers = len(find_decoder_layers(lm_model, path))
    config = openflamingo_config(ckpt, num_layers, cross_attn_every_n_layers)
    tokenizer = _openflamingo_tokenizer(tokenizer, getattr(lm_model, "name_or_path", "") or "")
    model = Flamingo.from_components(lm_model, vision, tokenizer=tokenizer, decoder_layers_attr=path, **config)
    d_vis, d_text = ckpt.perceiver["latents"].shape[1], lm_model.config.hidden_size
    if model.vision.hidden_size != d_vis:
        raise ValueError(f"the vision encoder has width {model.vision.hidden_size}; the checkpoint's resampler {d_vis}")
    block_width = ckpt.blocks[model.language_model.xattn_layer_ids[0]]["attn.to_q.weight"].shape[1]
    if block_width != d_text:
        raise ValueError(f"the LM has width {d_text}; the checkpoint's cross-attention blocks {block_width}")
    model.load_added_state_dict(_trainable_state(model, ckpt))
    if ckpt.num_vision_keys:
        logger.info("ignored %d vision_encoder.* tensors: the vision tower comes from %r", ckpt.num_vision_keys, vision)
    return model
