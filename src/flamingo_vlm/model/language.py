"""The frozen language model, made to see: gated blocks before its decoder layers, new token rows.

Any Hugging Face causal LM works if we can find its list of decoder layers. The LM object itself
is never modified: no class swapping, no replaced modules. Each gated block runs from a forward
pre-hook on its decoder layer, and the visual tokens reach it through a :class:`MediaScope` that
exists only for the duration of one call (:meth:`FlamingoLM.media_scope`), so no layer keeps
visual state between calls. Outside such a call the hooks do nothing: the user's LM object still
works on its own after wrapping, and one frozen LM can be shared by several Flamingo models.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from flamingo_vlm.model.xattn import GatedCrossAttentionDense, MediaKV

# Where each architecture keeps its decoder layers (attribute path from the *ForCausalLM model).
DECODER_LAYER_PATHS = {
    "gpt2": "transformer.h",
    "gptj": "transformer.h",
    "bloom": "transformer.h",
    "falcon": "transformer.h",
    "opt": "model.decoder.layers",
    "gpt_neox": "gpt_neox.layers",
    "mpt": "transformer.blocks",
    "llama": "model.layers",
    "mistral": "model.layers",
    "mixtral": "model.layers",
    "qwen2": "model.layers",
    "qwen3": "model.layers",
    "gemma": "model.layers",
    "gemma2": "model.layers",
    "phi": "model.layers",
    "phi3": "model.layers",
    "stablelm": "model.layers",
    "olmo": "model.layers",
    "olmo2": "model.layers",
}


def is_dispatched(lm: nn.Module) -> bool:
    """Whether the LM was spread over devices with a ``device_map`` (accelerate hooks move its activations):
    then it must never be moved as a whole, and each gated block lives on its own layer's device."""
    return len(set(map(str, (getattr(lm, "hf_device_map", None) or {}).values()))) > 1


def execution_device(module: nn.Module, default: torch.device) -> torch.device:
    """Where ``module`` computes: its accelerate hook's execution device (offloaded weights are on ``meta``
    between calls), else the device of its first materialised parameter, else ``default``."""
    device = getattr(getattr(module, "_hf_hook", None), "execution_device", None)
    if device is not None:
        return torch.device("cuda", device) if isinstance(device, int) else torch.device(device)
    for param in module.parameters():
        if param.device.type != "meta":
            return param.device
    return default


def find_decoder_layers(lm: nn.Module, attr: str | None = None) -> nn.ModuleList:
    """The LM's decoder layers; ``attr`` (e.g. ``"model.layers"``) overrides the lookup."""
    model_type = getattr(getattr(lm, "config", None), "model_type", None)
    path = attr or DECODER_LAYER_PATHS.get(model_type)
    if path is None:
        raise ValueError(
            f"don't know where a {model_type!r} model keeps its decoder layers; pass "
            "decoder_layers_attr='<dotted path from the causal LM to its nn.ModuleList of layers>' "
            "(for example 'model.layers') to Flamingo.from_components"
        )
    module = lm
    for name in path.split("."):
        if not hasattr(module, name):
            raise ValueError(f"decoder_layers_attr {path!r} does not exist on {type(lm).__name__} (no {name!r})")
        module = getattr(module, name)
    if not isinstance(module, nn.ModuleList):
        raise ValueError(f"decoder_layers_attr {path!r} is a {type(module).__name__}, not an nn.ModuleList")
    return module


class NewTokenEmbeddings(nn.Module):
    """Trainable rows for the tokens the frozen LM never saw (``<image>``, ``<|endofchunk|>``).

    Decoupled from the LM's embedding matrix so that the base vocabulary cannot drift, whatever
    the optimiser does (weight decay included). The new ids ``first_id .. first_id+n-1`` either
    extend the vocabulary or override padding rows of an LM whose matrix is larger than its
    tokenizer. When the LM ties input and output embeddings, the new rows are tied too.
    """

    def __init__(self, lm: nn.Module, first_id: int, num_new: int, inherit: bool = False) -> None:
        """``inherit``: start from the LM's own rows at these ids where it has them (its tokenizer already
        had the tokens, so the LM learned them); otherwise from the mean row, a neutral token for an LM
        that never saw them.
        """
        super().__init__()
        base_in, base_out = lm.get_input_embeddings(), lm.get_output_embeddings()
        if first_id > base_in.num_embeddings:
            raise ValueError(
                f"the tokenizer places new tokens at id {first_id}, past the LM's {base_in.num_embeddings} "
                "embedding rows: the tokenizer does not belong to this LM"
            )
        self.first_id, self.num_new = first_id, num_new
        self.tied = base_out is not None and base_out.weight is base_in.weight
        inherit = inherit and first_id + num_new <= base_in.num_embeddings  # rows past the matrix: nothing to keep

        def start(weight: torch.Tensor) -> nn.Parameter:
            rows = weight[first_id : first_id + num_new] if inherit else weight.mean(0).repeat(num_new, 1)
            return nn.Parameter(rows.detach().float().clone())  # (n, d)

        self.input = start(base_in.weight)
        self.output = None if self.tied else start(base_out.weight)

    def freeze(self, base: nn.Embedding, copy_rows: dict[int, int]) -> None:
        """Fix the new rows (no gradient reaches the embeddings, so backward stops at the first block).

        ``copy_rows`` maps a new id to a base id whose row it takes (e.g. ``<|endofchunk|>`` ← EOS: the
        end of a chunk is, to a text-only LM, the end of a text); the others keep their start.
        """
        with torch.no_grad():
            for new_id, base_id in copy_rows.items():
                for rows in (self.input, self.output):
                    if rows is not None:
                        rows[new_id - self.first_id] = base.weight[base_id].float()
        self.requires_grad_(False)

    def vocab_size(self, base_rows: int) -> int:
        return max(base_rows, self.first_id + self.num_new)

    def embed(self, base: nn.Embedding, ids: torch.Tensor) -> torch.Tensor:
        """ids: (b, L) → (b, L, d), base rows from the frozen LM, new rows from here."""
        is_new = (ids >= self.first_id) & (ids < self.first_id + self.num_new)  # (b, L)
        x = base(ids.masked_fill(is_new, 0))  # (b, L, d), on the embedding's device (device_map)
        new = F.embedding((ids - self.first_id).clamp(0, self.num_new - 1).to(self.input.device), self.input)
        return torch.where(is_new.to(x.device).unsqueeze(-1), new.to(x.device, x.dtype), x)  # (b, L, d)

    def logits(self, head: nn.Linear, hidden: torch.Tensor) -> torch.Tensor:
        """hidden: (b, L, d) → (b, L, V): the frozen head's columns with the new ones put in place.

        The head is called as a module (not through its weight), so that a head placed or offloaded by a
        ``device_map`` runs where accelerate puts it; the logits come back to ``hidden``'s device.
        """
        base = head(hidden).to(hidden.device)  # (b, L, V_base)
        rows = self.input if self.tied else self.output
        new = F.linear(hidden, rows.to(hidden.device, hidden.dtype))  # (b, L, n)
        return torch.cat([base[..., : self.first_id], new, base[..., self.first_id + self.num_new :]], dim=-1)


class _GatedBlockHook:
    """The pre-hook a decoder layer calls: an object, not a closure, so that ``copy.deepcopy`` of a Flamingo
    gives hooks that call the *copy's* blocks (a copied closure would still call the original's, whose scope
    is never set, and the copy would silently run as the bare LM)."""

    def __init__(self, owner: FlamingoLM, block_id: int) -> None:
        self.owner, self.block_id = owner, block_id

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        return self.owner.run_block(self.block_id, args, kwargs)


@dataclass
class MediaScope:
    """What the gated blocks see during one LM call.

    ``media``: resampled visual tokens (b, n_media, n_latents, d_vis); ``attend``: (b, L, n_media)
    which media each token of this call may see. ``kv_cache`` maps block index → projected keys
    and values; generation passes the same dict to every step so they are projected once.
    """

    media: torch.Tensor
    attend: torch.Tensor
    kv_cache: dict[int, MediaKV] | None = field(default=None)


class FlamingoLM(nn.Module):
    """A frozen HF causal LM with gated cross-attention blocks before every n-th decoder layer."""

    def __init__(
        self,
        lm: nn.Module,
        *,
        dim_visual: int,
        new_token_ids: list[int],
        lm_knows_new_tokens: bool = False,
        cross_attn_every: int = 1,
        cross_attn_offset: int = 0,
        heads: int = 8,
        dim_head: int = 64,
        ff_mult: int = 4,
        activation: str = "squared_relu",
        qk_norm: bool = False,
        residual_scaled: bool = False,
        gate_init: float = 0.0,
        decoder_layers_attr: str | None = None,
    ) -> None:
        super().__init__()
        ids = sorted(new_token_ids)
        if ids != list(range(ids[0], ids[0] + len(ids))):
            raise ValueError(f"the new special tokens must have consecutive ids, got {new_token_ids}")
        self.lm = lm.requires_grad_(False).eval()
        layers = find_decoder_layers(lm, decoder_layers_attr)
        self._layers_attr = decoder_layers_attr
        dim = lm.config.hidden_size  # the decoder's width (OPT may project embeddings to it)
        # Block k sits before decoder layer offset + k·every (paper: "every n-th layer"; we start at the
        # first, OpenFlamingo at layer every-1).
        self.xattn_layer_ids = list(range(cross_attn_offset, len(layers), cross_attn_every))
        if not self.xattn_layer_ids:
            raise ValueError(f"cross_attn_offset {cross_attn_offset} leaves no block in a {len(layers)}-layer LM")
        self.gated_xattn = nn.ModuleList(
            GatedCrossAttentionDense(
                dim, dim_visual, heads, dim_head, ff_mult, activation, qk_norm, residual_scaled, gate_init
            )
            for _ in self.xattn_layer_ids
        )
        self.new_tokens = NewTokenEmbeddings(lm, ids[0], len(ids), inherit=lm_knows_new_tokens)
        self._scope: MediaScope | None = None
        for block_id, layer_id in enumerate(self.xattn_layer_ids):
            layers[layer_id].register_forward_pre_hook(self._pre_hook(block_id), with_kwargs=True)
        params = inspect.signature(lm.base_model.forward).parameters
        self._cache_kwarg = "cache" if "cache" in params else "past_key_values"

    @property
    def vocab_size(self) -> int:
        return self.new_tokens.vocab_size(self.lm.get_input_embeddings().num_embeddings)

    def train(self, mode: bool = True) -> FlamingoLM:
        super().train(mode)
        self.lm.eval()  # frozen: dropout stays off whatever the trainable parts do
        return self

    def place(self, device: torch.device) -> None:
        """For an LM spread with a ``device_map``: the new token rows to ``device`` (where the embeddings'
        output is gathered), and each gated block to the execution device of the layer it runs before."""
        self.new_tokens.to(device)
        layers = find_decoder_layers(self.lm, self._layers_attr)
        for block, layer_id in zip(self.gated_xattn, self.xattn_layer_ids):
            block.to(execution_device(layers[layer_id], device))

    @contextmanager
    def media_scope(self, scope: MediaScope) -> Iterator[None]:
        """Make ``scope`` visible to the gated blocks for one call; always cleared afterwards."""
        if self._scope is not None:
            raise RuntimeError("nested Flamingo LM calls are not supported")
        self._scope = scope
        try:
            yield
        finally:
            self._scope = None

    def _pre_hook(self, block_id: int) -> _GatedBlockHook:
        return _GatedBlockHook(self, block_id)

    def run_block(self, block_id: int, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        """Decoder layer ``block_id``'s pre-hook: its gated block applied to the layer's input, inside a scope."""
        scope = self._scope
        if scope is None:  # the LM called on its own, or by another Flamingo sharing it
            return None
        block = self.gated_xattn[block_id]
        # The block runs where its layer does (a device_map may spread the layers): its inputs go there.
        device = block.attn_gate.device
        if scope.kv_cache is None:
            media_kv = block.attn.project_media(scope.media.to(device))
        else:
            if block_id not in scope.kv_cache:
                scope.kv_cache[block_id] = block.attn.project_media(scope.media.to(device))
            media_kv = scope.kv_cache[block_id]
        attend = scope.attend.to(device)
        if args:
            return (block(args[0].to(device), media_kv, attend), *args[1:]), kwargs
        hidden = kwargs["hidden_states"].to(device)
        return args, {**kwargs, "hidden_states": block(hidden, media_kv, attend)}

    def hidden_states(
        self,
        input_ids: torch.Tensor,
        scope: MediaScope,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        cache=None,
        use_cache: bool = False,
    ) -> tuple[torch.Tensor, object]:
        """input_ids (b, L) → the last decoder layer's normed output (b, L, d), and the KV cache."""
        embeds = self.new_tokens.embed(self.lm.get_input_embeddings(), input_ids)  # (b, L, d)
        with self.media_scope(scope):
            out = self.lm.base_model(
                inputs_embeds=embeds,
                attention_mask=attention_mask,
                position_ids=position_ids,
                use_cache=use_cache,
                **{self._cache_kwarg: cache},
            )
        hidden = out.last_hidden_state.to(input_ids.device)  # a device_map may end the LM elsewhere
        return hidden, (out[self._cache_kwarg] if use_cache else None)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden (..., d) → logits (..., V): the frozen head with the new tokens' columns."""
        return self.new_tokens.logits(self.lm.get_output_embeddings(), hidden)

    def forward(
        self,
        input_ids: torch.Tensor,
        scope: MediaScope,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        cache=None,
        use_cache: bool = False,
        logits_slice: slice | None = None,
    ) -> tuple[torch.Tensor, object]:
        """input_ids (b, L) → logits (b, L', V) for positions ``logits_slice`` (all by default), cache."""
        hidden, cache = self.hidden_states(input_ids, scope, attention_mask, position_ids, cache, use_cache)
        if logits_slice is not None:
            hidden = hidden[:, logits_slice]
        return self.logits(hidden), cache
