"""Flamingo (Alayrac et al., 2022): a frozen LM and a frozen vision encoder, bridged by a trainable
Perceiver Resampler and gated cross-attention blocks.

    pixels (b, n, t, c, h, w) ─ vision (frozen) ─▶ (b, n, t, v, d_vis) ─ resampler ─▶ (b, n, L, d_vis)
    input_ids (b, T) ─ LM (frozen) with gated xattn before every k-th layer ─▶ logits (b, T, V)

Token ℓ cross-attends only to image φ(ℓ), the last ``<image>`` at or before it (``media_attention=
"previous"``), or to every image up to φ(ℓ) (``"all_previous"``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from flamingo_vlm.config import FlamingoConfig
from flamingo_vlm.io import load_tensors, save_safetensors
from flamingo_vlm.model import generation
from flamingo_vlm.model.causal_lm import LM_DTYPES, drop_gguf_quantizer, lm_reference, load_causal_lm, load_tokenizer
from flamingo_vlm.model.language import FlamingoLM, MediaScope, execution_device, find_decoder_layers, is_dispatched
from flamingo_vlm.model.loss import lm_loss
from flamingo_vlm.model.masking import last_media_index, media_attention_mask, positions_from_mask
from flamingo_vlm.model.resampler import PerceiverResampler
from flamingo_vlm.model.vision import load_vision_encoder
from flamingo_vlm.model.vision_encoder import VisionEncoder
from flamingo_vlm.tokenization import add_flamingo_tokens

CONFIG_NAME = "flamingo_config.json"
WEIGHTS_NAME = "flamingo.safetensors"
# The modules Flamingo adds around the frozen LM and vision encoder.
ADDED_PREFIXES = ("resampler.", "language_model.gated_xattn.", "language_model.new_tokens.")
# Text for calibrating output scales: the residual stream's typical size is a property of the LM,
# so a few ordinary sentences of the kinds Flamingo reads (prose, captions, questions) suffice.
CALIBRATION_TEXTS = (
    "The quick brown fox jumps over the lazy dog, and the dog does not seem to mind at all.",
    "Output: a large red circle above a small blue square on a grey background.",
    "Question: How many people are standing next to the yellow car? Answer: three",
    "In 1905 Albert Einstein published four papers that changed how physicists think about space and time.",
    "A photo of a cat sitting on a wooden table next to a cup of coffee.",
    "Recipe: whisk two eggs with a cup of milk, add flour slowly, and fry thin pancakes in butter.",
    "The meeting was moved to Thursday because the projector in the main room was broken again.",
    "Question: What colour is the umbrella the woman is holding? Answer: green",
)


@dataclass
class FlamingoOutput:
    logits: torch.Tensor | None  # (b, T, V); None when forward was asked for the loss alone
    loss: torch.Tensor | None = None
    cache: Any = None  # the LM's self-attention KV cache when use_cache=True


def _load_lm(spec: str | nn.Module, lm_kwargs: dict[str, Any], lm_dtype: str = "auto") -> tuple[nn.Module, str]:
    if isinstance(spec, nn.Module):
        if lm_dtype != "auto" and not is_dispatched(spec):
            spec.to(LM_DTYPES[lm_dtype])
        return spec, lm_reference(spec)
    return load_causal_lm(str(spec), lm_kwargs, lm_dtype), str(spec)


def _with_device_map(lm_kwargs: dict[str, Any] | None, device_map: Any) -> dict[str, Any]:
    kwargs = dict(lm_kwargs or {})
    if device_map is not None:
        kwargs["device_map"] = device_map
    return kwargs


def build_resampler(config: FlamingoConfig, dim_visual: int) -> PerceiverResampler:
    """The resampler ``config`` describes; shared with the memory estimator, which builds it on ``meta``."""
    return PerceiverResampler(
        dim_visual,
        depth=config.resampler_depth,
        num_latents=config.num_latents,
        heads=config.resampler_heads,
        dim_head=config.resampler_dim_head,
        ff_mult=config.resampler_ff_mult,
        max_frames=config.max_frames,
        activation=config.activation,
        use_time_embeddings=config.resampler_time_embeddings,
        latent_std=config.resampler_latent_std,
    )


class Flamingo(nn.Module):
    def __init__(self, config: FlamingoConfig, lm: nn.Module, vision: VisionEncoder, tokenizer) -> None:
        super().__init__()
        self.config = config
        self.tokenizer = tokenizer
        # An LM pretrained with these tokens in its vocabulary (ShapesWorld's) keeps what it learned of them.
        lm_knows_new_tokens = all(t in tokenizer.get_vocab() for t in (config.media_token, config.eoc_token))
        self.media_token_id, self.eoc_token_id = add_flamingo_tokens(tokenizer, config.media_token, config.eoc_token)
        self.vision = vision.requires_grad_(False).eval()
        self.resampler = build_resampler(config, vision.hidden_size)
        self.language_model = FlamingoLM(
            lm,
            dim_visual=vision.hidden_size,
            new_token_ids=[self.media_token_id, self.eoc_token_id],
            lm_knows_new_tokens=lm_knows_new_tokens,
            cross_attn_every=config.cross_attn_every,
            cross_attn_offset=config.cross_attn_offset,
            heads=config.xattn_heads,
            dim_head=config.xattn_dim_head,
            ff_mult=config.xattn_ff_mult,
            activation=config.activation,
            qk_norm=config.xattn_qk_norm,
            residual_scaled=config.xattn_residual_scale,
            gate_init=config.xattn_gate_init,
            decoder_layers_attr=config.decoder_layers_attr,
        )
        if not config.train_new_tokens:
            eos = tokenizer.eos_token_id
            copy = {} if lm_knows_new_tokens or eos is None else {self.eoc_token_id: eos}
            self.language_model.new_tokens.freeze(lm.get_input_embeddings(), copy)
        lm_vocab = self.language_model.vocab_size
        if len(tokenizer) > lm_vocab:
            raise ValueError(f"the tokenizer has {len(tokenizer)} tokens but the LM only {lm_vocab} output rows")

    # ------------------------------------------------------------------ construction and I/O

    @classmethod
    def from_components(
        cls,
        lm: str | nn.Module,
        vision: str | nn.Module,
        *,
        tokenizer=None,
        lm_kwargs: dict[str, Any] | None = None,
        device_map: str | dict[str, Any] | None = None,
        **config_kwargs: Any,
    ) -> Flamingo:
        """Build a fresh Flamingo (random resampler and blocks, gates at 0) around two frozen parts.

        ``lm``: a hub id, a local directory, a ``.gguf`` file, a packaged name (``"smollm2-135m-instruct"``,
        see :mod:`flamingo_vlm.model.causal_lm`) or a loaded ``PreTrainedModel``; ``vision``: a directory
        (CLIP, SigLIP or the built-in NFNet), a hub id, ``"timm:<name>"`` or a VisionEncoder module.
        ``config_kwargs`` are :class:`FlamingoConfig` fields (``cross_attn_every``, ``num_latents``,
        ``lm_dtype``...). ``device_map`` (accelerate's: ``"auto"``, or module name → device) spreads the
        frozen LM over devices; the rest of the model then sits on the LM's first device (:meth:`place`).
        """
        lm_kwargs = _with_device_map(lm_kwargs, device_map)
        lm_model, lm_ref = _load_lm(lm, lm_kwargs, config_kwargs.get("lm_dtype", "auto"))
        vision_encoder = load_vision_encoder(vision)
        if tokenizer is None:
            if not lm_ref:
                raise ValueError("the LM was passed as a module without a name_or_path; pass tokenizer= too")
            tokenizer = load_tokenizer(lm_ref, lm_kwargs)
        drop_gguf_quantizer(lm_model)  # a user's dequantized GGUF module: saveable like any other
        config = FlamingoConfig(lm=lm_ref, vision=vision_encoder.reference, **config_kwargs)
        model = cls(config, lm_model, vision_encoder, tokenizer)
        if "device_map" in lm_kwargs or is_dispatched(lm_model):
            model.place()
        if config.xattn_residual_scale:
            model.calibrate_output_scales()
        return model

    @property
    def lm(self) -> nn.Module:
        """The frozen Hugging Face causal LM."""
        return self.language_model.lm

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return {name: p for name, p in self.named_parameters() if p.requires_grad}

    def added_state_dict(self) -> dict[str, torch.Tensor]:
        """Everything Flamingo adds to the frozen parts: what a checkpoint holds.

        The trainable weights, plus what is fixed at build time but not derivable from the frozen
        parts alone: calibrated output scales and (when frozen) the new token rows.
        """
        state = {**dict(self.named_parameters()), **dict(self.named_buffers())}
        return {name: t for name, t in state.items() if name.startswith(ADDED_PREFIXES)}

    @torch.no_grad()
    def calibrate_output_scales(self, texts: Sequence[str] = CALIBRATION_TEXTS) -> list[float]:
        """Set each gated block's output scale to the median per-token RMS of the LM's residual stream
        entering its layer, measured on ``texts`` with the bare LM; returns the scales.

        The median, not the mean: pretrained LMs put massive activations on a few tokens (the first
        one above all), whose RMS can be many times the typical token's.
        """
        blocks = list(self.language_model.gated_xattn)
        if blocks[0].output_scale is None:
            raise ValueError("this model was built with xattn_residual_scale=False: it has no output scales")
        device = next(self.lm.parameters()).device
        batch = self.tokenizer(list(texts), return_tensors="pt", padding=True, padding_side="right").to(device)
        layers = find_decoder_layers(self.lm, self.config.decoder_layers_attr)
        rms: dict[int, torch.Tensor] = {}

        def capture(block_id: int):
            def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
                hidden = args[0] if args else kwargs["hidden_states"]  # (b, T, d)
                rms[block_id] = hidden.float().pow(2).mean(-1).sqrt()  # (b, T)

            return hook

        handles = [
            layers[layer].register_forward_pre_hook(capture(k), with_kwargs=True)
            for k, layer in enumerate(self.language_model.xattn_layer_ids)
        ]
        try:
            self.lm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])  # gated blocks: inactive
        finally:
            for handle in handles:
                handle.remove()
        real = batch["attention_mask"].bool()
        for k, block in enumerate(blocks):
            block.output_scale.fill_(rms[k][real].median())
        return [block.output_scale.item() for block in blocks]

    @property
    def lm_spread(self) -> bool:
        """Whether the frozen LM is spread over devices by a ``device_map``."""
        return is_dispatched(self.lm)

    def place(self, device: str | torch.device | None = None) -> Flamingo:
        """Move the model to ``device`` (default: the device of the LM's input embeddings, i.e. where a
        ``device_map`` put the LM), like ``.to(device)``, except for an LM spread over several devices: that
        stays where accelerate put it (``.to`` would fail on its offloaded weights), the vision encoder,
        resampler and new token rows go to ``device`` and each gated block to its own layer's device.
        """
        embeddings = self.lm.get_input_embeddings()
        main = torch.device(device) if device is not None else execution_device(embeddings, torch.device("cpu"))
        if not self.lm_spread:  # one device (a device_map may still have put the LM on a GPU): everything there
            return self.to(main)
        self.vision.to(main)
        self.resampler.to(main)
        self.language_model.place(main)
        return self

    def train(self, mode: bool = True) -> Flamingo:
        super().train(mode)
        self.vision.eval()  # frozen parts never switch to training behaviour
        self.language_model.lm.eval()
        return self

    def save_pretrained(
        self,
        directory: str | Path,
        full: bool = False,
        *,
        state_dict: dict[str, torch.Tensor] | None = None,
        require_references: bool = True,
    ) -> None:
        """Config, trainable weights (safetensors) and tokenizer; ``full`` also writes both frozen parts.

        Without ``full`` the checkpoint refers to the LM and vision encoder by the path or hub id
        they were loaded from, which keeps checkpoints small (the frozen parts are most of the bytes).
        ``state_dict`` (as in Hugging Face) replaces :meth:`added_state_dict` as the weights written:
        under FSDP the model's own tensors are shards, so the trainer gathers them first and passes
        them in. ``require_references=False`` writes a checkpoint even when a frozen part was built in
        memory and has no path: a training checkpoint resumes into the live model and needs none.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = FlamingoConfig.from_dict(self.config.to_dict())
        if full:
            self.lm.save_pretrained(directory / "lm")
            self.vision.save_pretrained(directory / "vision")
            config.lm, config.vision = "lm", "vision"
        missing = [name for name, ref in (("LM", config.lm), ("vision encoder", config.vision)) if not ref]
        if missing and require_references:
            raise ValueError(f"the {' and '.join(missing)} were built in memory and have no path; use full=True")
        self.tokenizer.save_pretrained(directory)
        state = self.added_state_dict() if state_dict is None else state_dict
        save_safetensors(state, directory / WEIGHTS_NAME, metadata={"format": "pt"})
        config.save(directory / CONFIG_NAME)

    @classmethod
    def from_pretrained(
        cls,
        directory: str | Path,
        lm_kwargs: dict[str, Any] | None = None,
        *,
        lm_dtype: str | None = None,
        device_map: str | dict[str, Any] | None = None,
    ) -> Flamingo:
        """Load a checkpoint written by :meth:`save_pretrained`.

        ``lm_dtype`` overrides the checkpoint's (``"bf16"`` loads a 7B LM in 14 GB, with no fp32 copy);
        ``device_map`` spreads the frozen LM over devices as in :meth:`from_components`.
        """
        from transformers import AutoTokenizer

        directory = Path(directory)
        if not (directory / CONFIG_NAME).is_file():
            raise ValueError(f"{directory} is not a Flamingo checkpoint (no {CONFIG_NAME})")
        config = FlamingoConfig.load(directory / CONFIG_NAME)
        if lm_dtype is not None:
            config = FlamingoConfig.from_dict({**config.to_dict(), "lm_dtype": lm_dtype})

        def resolve(ref: str) -> str:  # self-contained checkpoints refer to their own sub-directories
            return str(directory / ref) if (directory / ref).exists() else ref

        lm_kwargs = _with_device_map(lm_kwargs, device_map)
        lm, _ = _load_lm(resolve(config.lm), lm_kwargs, config.lm_dtype)
        model = cls(config, lm, load_vision_encoder(resolve(config.vision)), AutoTokenizer.from_pretrained(directory))
        model.load_added_state_dict(load_tensors(directory / WEIGHTS_NAME))
        return model.place() if "device_map" in lm_kwargs or model.lm_spread else model

    def load_added_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load what :meth:`added_state_dict` returned (checked: same names, same shapes).

        Through ``load_state_dict``, so that modules' load hooks upgrade older checkpoints (0-d gates).
        """
        expected = self.added_state_dict()
        missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        if missing or unexpected:
            raise ValueError(f"checkpoint does not match the model: missing {missing}, unexpected {unexpected}")
        try:
            self.load_state_dict(state, strict=False)  # the frozen parts' keys are absent on purpose
        except RuntimeError as err:  # size mismatches, listed by name
            raise ValueError(f"checkpoint does not match the model: {err}") from err

    # ------------------------------------------------------------------ media

    def encode_media(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        vision_features: torch.Tensor | None = None,
        media_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Validate the media against the ``<image>`` tokens and resample them: (b, n_media, L, d_vis).

        Only real media go through the encoder and resampler; padding slots stay zero and are
        never attended to, because φ never exceeds a row's real media count.
        """
        b = input_ids.shape[0]
        counts = (input_ids == self.media_token_id).sum(dim=1)  # (b,)
        source = self._check_media_source(b, pixel_values, vision_features)
        if source is None:
            if counts.any():
                rows = counts.nonzero().flatten().tolist()
                raise ValueError(
                    f"rows {rows} contain {counts[rows].tolist()} <image> tokens but no pixel_values or "
                    "vision_features were given"
                )
            return self.resampler.latents.new_zeros(b, 0, self.config.num_latents, self.vision.hidden_size)
        n = source.shape[1]
        if media_mask is None:
            media_mask = torch.ones(b, n, dtype=torch.bool, device=source.device)
        media_mask = media_mask.bool()
        if media_mask.shape != (b, n):
            raise ValueError(f"media_mask has shape {tuple(media_mask.shape)}, expected (b, n_media) = {(b, n)}")
        if (media_mask[:, 1:] & ~media_mask[:, :-1]).any():
            raise ValueError("media_mask must list each row's real media first, then padding slots")
        real = media_mask.sum(dim=1).to(counts.device)
        if not torch.equal(real, counts):
            bad = (real != counts).nonzero().flatten().tolist()
            details = ", ".join(f"row {r}: {counts[r].item()} <image> tokens vs {real[r].item()} media" for r in bad)
            raise ValueError(f"<image> token count differs from the number of real media ({details})")

        if not media_mask.any():  # only padding slots: nothing to encode (an encoder may refuse an empty batch)
            return self.resampler.latents.new_zeros(b, n, self.config.num_latents, self.vision.hidden_size)
        if pixel_values is not None:
            pixels = pixel_values[media_mask]  # (n_real, t, c, h, w)
            t = pixels.shape[1]
            with torch.no_grad():
                param = next(self.vision.parameters())
                features = self.vision(pixels.flatten(0, 1).to(param.device, param.dtype))  # (n_real·t, v, d)
            features = features.unflatten(0, (-1, t))  # (n_real, t, v, d)
        else:
            features = vision_features[media_mask]  # (n_real, t, v, d)
        dtype = self.resampler.latents.dtype
        tokens = self.resampler(features.unsqueeze(0).to(dtype)).squeeze(0)  # (n_real, L, d)
        media = tokens.new_zeros(b, n, *tokens.shape[1:])  # (b, n, L, d)
        media[media_mask.to(media.device)] = tokens
        return media

    def check_tokens(self, input_ids: Any, attention_mask: Any = None, labels: Any = None) -> None:
        """Type, shape and range checks of the token tensors that forward, generate and score take.

        A float or out-of-vocabulary id would otherwise fail deep inside the embedding (or index past it on
        a GPU), and a mask of another length inside the attention of some layer.
        """
        if not isinstance(input_ids, torch.Tensor) or input_ids.is_floating_point() or input_ids.is_complex():
            raise ValueError(f"input_ids must be an integer tensor, got {_describe(input_ids)}")
        if input_ids.ndim != 2 or input_ids.shape[1] == 0:
            raise ValueError(f"input_ids must be (b, T) with T >= 1; got shape {tuple(input_ids.shape)}")
        vocab = max(len(self.tokenizer), self.lm.get_input_embeddings().num_embeddings)
        if input_ids.dtype == torch.bool or ((input_ids < 0) | (input_ids >= vocab)).any():  # one device sync
            raise ValueError(
                f"input_ids must lie in [0, {vocab}); got [{input_ids.min().item()}, {input_ids.max().item()}]"
            )
        for name, tensor in (("attention_mask", attention_mask), ("labels", labels)):
            if tensor is not None and (not isinstance(tensor, torch.Tensor) or tensor.shape != input_ids.shape):
                shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
                raise ValueError(f"{name} must be a tensor of input_ids' shape {tuple(input_ids.shape)}; got {shape}")

    def _check_media_source(self, b: int, pixel_values, vision_features) -> torch.Tensor | None:
        if pixel_values is not None and vision_features is not None:
            raise ValueError("pass either pixel_values or vision_features, not both")
        for name, tensor in (("pixel_values", pixel_values), ("vision_features", vision_features)):
            if tensor is not None and not (isinstance(tensor, torch.Tensor) and tensor.is_floating_point()):
                raise ValueError(f"{name} must be a float tensor, got {_describe(tensor)}")
        if pixel_values is not None:
            v = self.vision
            expected = f"(b, n_media, t, {v.num_channels}, {v.image_size}, {v.image_size})"
            if pixel_values.ndim != 6:
                raise ValueError(f"pixel_values must be {expected}; got shape {tuple(pixel_values.shape)}")
            if pixel_values.shape[0] != b or pixel_values.shape[3:] != (v.num_channels, v.image_size, v.image_size):
                raise ValueError(f"pixel_values must be {expected} with b={b}; got shape {tuple(pixel_values.shape)}")
            return pixel_values
        if vision_features is not None:
            d = self.vision.hidden_size
            if vision_features.ndim != 5 or vision_features.shape[0] != b or vision_features.shape[-1] != d:
                raise ValueError(
                    f"vision_features must be (b={b}, n_media, t, v, d={d}); got shape {tuple(vision_features.shape)}"
                )
            return vision_features
        return None

    # ------------------------------------------------------------------ forward

    @property
    def max_length(self) -> int | None:
        config = self.lm.config
        return getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)

    def _check_length(self, length: int) -> None:
        limit = self.max_length
        if limit is not None and length > limit:
            raise ValueError(f"sequence of {length} tokens exceeds the LM's {limit} positions")

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        vision_features: torch.Tensor | None = None,
        media_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        loss_reduction: Literal["mean", "sum"] = "mean",
        return_logits: bool = True,
    ) -> FlamingoOutput:
        """input_ids (b, T); pixel_values (b, n_media, t, c, h, w) or vision_features (b, n_media, t, v, d).

        ``labels`` (b, T), aligned with the inputs (shifted here), -100 ignored, give ``loss``: the mean
        NLL per loss token, or its sum (``loss_reduction="sum"``, for callers that normalise over
        several batches). Training passes ``return_logits=False``: the vocabulary projection then runs
        only at labelled positions (:func:`~flamingo_vlm.model.loss.lm_loss`), and ``logits`` is None.
        """
        self.check_tokens(input_ids, attention_mask, labels)
        self._check_length(input_ids.shape[1])
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if position_ids is None:
            position_ids = positions_from_mask(attention_mask)
        media = self.encode_media(input_ids, pixel_values, vision_features, media_mask)
        phi = last_media_index(input_ids, self.media_token_id)  # (b, T)
        scope = MediaScope(media, media_attention_mask(phi, media.shape[1], self.config.media_attention))
        hidden, _ = self.language_model.hidden_states(input_ids, scope, attention_mask, position_ids)  # (b, T, d)
        loss = None
        if labels is not None:
            loss, count = lm_loss(self.language_model.logits, hidden, labels)
            loss = loss if loss_reduction == "sum" else loss / max(count, 1)
        elif not return_logits:
            raise ValueError("return_logits=False needs labels: there would be nothing to return")
        logits = self.language_model.logits(hidden) if return_logits else None  # (b, T, V)
        return FlamingoOutput(logits=logits, loss=loss)

    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: Any):
        """Cached beam search / greedy / sampling; see :func:`flamingo_vlm.model.generation.generate`."""
        return generation.generate(self, input_ids, attention_mask, **kwargs)

    def score(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: Any):
        """Candidate log-likelihoods; see :func:`flamingo_vlm.model.generation.score`."""
        return generation.score(self, input_ids, attention_mask, **kwargs)

    def extra_repr(self) -> str:
        counts = {name: sum(p.numel() for p in m.parameters()) for name, m in self.named_children()}
        return json.dumps(counts)


def _describe(value: Any) -> str:
    """``Tensor of dtype torch.int64``, ``ndarray of dtype float32``, ``list``: what a caller passed."""
    dtype = getattr(value, "dtype", None)
    return type(value).__name__ + (f" of dtype {dtype}" if dtype is not None else "")
