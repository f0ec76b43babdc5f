"""Configuration: FlamingoConfig, and the one way every recipe reads its config.

:class:`FlamingoConfig` holds every hyper-parameter of the trainable Flamingo parts as one flat dataclass:
it maps one-to-one onto ``Flamingo.from_components(**kwargs)`` with no nesting rules to learn.

Every recipe's config is a dataclass (sections are dataclasses too) read from YAML with :func:`load_config`:
``extends: other.yaml`` starts from another file (mappings merge, everything else is replaced), then
``key=value`` overrides use dotted paths (``optim.lr=3e-4``, ``data.datasets.1.weight=0.5``) and YAML value
syntax. A typo must not silently fall back to a default (a misspelt ``warmup_step`` would train a different
model), so unknown keys are errors that name the full dotted key, and values are checked against the types.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from flamingo_vlm.io import MAX_JSON_BYTES, read_bytes, read_json

MediaAttention = Literal["previous", "all_previous"]
LMDtype = Literal["auto", "fp32", "bf16", "fp16"]
Activation = Literal["squared_relu", "gelu"]
C = TypeVar("C")


@dataclass
class FlamingoConfig:
    # Frozen parts: references that from_pretrained resolves (hub id, local path, or a path
    # relative to the checkpoint directory for self-contained checkpoints).
    lm: str = ""
    vision: str = ""
    # Perceiver Resampler (paper: 6 layers, 64 latents).
    num_latents: int = 64
    resampler_depth: int = 6
    resampler_heads: int = 8
    resampler_dim_head: int = 64
    resampler_ff_mult: int = 4
    max_frames: int = 8  # learned temporal embeddings; longer videos interpolate them
    resampler_time_embeddings: bool = True  # OpenFlamingo adds none: its frames are flattened as they are
    resampler_latent_std: float = 1.0  # initial scale of the learned latents (small: media dominate; results.md)
    # Gated cross-attention dense blocks.
    cross_attn_every: int = 1  # a block before every n-th frozen decoder layer
    cross_attn_offset: int = 0  # decoder layer of the first block (OpenFlamingo: cross_attn_every - 1)
    xattn_heads: int = 8
    xattn_dim_head: int = 64
    xattn_ff_mult: int = 4
    xattn_qk_norm: bool = False  # IDEFICS found q/k LayerNorm stabilises large-scale training
    activation: Activation = "squared_relu"  # FFW activation in resampler and xattn blocks
    media_attention: MediaAttention = "previous"  # paper default: a token sees only its last image
    # Departures from the paper that make a frozen pretrained LM start to see sooner (docs/results.md):
    xattn_residual_scale: bool = False  # scale block outputs by the residual stream's typical RMS
    xattn_gate_init: float = 0.0  # ≠ 0: gates start open, branch output projections at zero (still identity)
    train_new_tokens: bool = True  # False: fixed <image>/<|endofchunk|> rows; backward stops at the first block
    # Tokens and LM plumbing.
    media_token: str = "<image>"
    eoc_token: str = "<|endofchunk|>"
    decoder_layers_attr: str | None = None  # e.g. "model.layers" for an unknown architecture
    # Storage dtype of the frozen LM, loaded straight into it (no fp32 copy on the way); "auto": the dtype its
    # checkpoint was saved in. The trainable parts stay fp32 whatever this is (bf16 autocast does the rest).
    lm_dtype: LMDtype = "auto"

    def __post_init__(self) -> None:
        if self.media_attention not in ("previous", "all_previous"):
            raise ValueError(f"media_attention must be 'previous' or 'all_previous', got {self.media_attention!r}")
        if self.lm_dtype not in ("auto", "fp32", "bf16", "fp16"):
            raise ValueError(f"lm_dtype must be 'auto', 'fp32', 'bf16' or 'fp16', got {self.lm_dtype!r}")
        if self.activation not in ("squared_relu", "gelu"):
            raise ValueError(f"activation must be 'squared_relu' or 'gelu', got {self.activation!r}")
        for name in ("cross_attn_every", "num_latents", "resampler_depth", "max_frames"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.resampler_latent_std > 0:
            raise ValueError(f"resampler_latent_std must be > 0, got {self.resampler_latent_std}")
        if not 0 <= self.cross_attn_offset < self.cross_attn_every:
            raise ValueError(
                f"cross_attn_offset must be in [0, cross_attn_every={self.cross_attn_every}), "
                f"got {self.cross_attn_offset}"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FlamingoConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown FlamingoConfig keys: {unknown}")
        return cls(**data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> FlamingoConfig:
        return cls.from_dict(read_json(path))


# ---------------------------------------------------------------------------------------------------------------------
# YAML configs for every recipe


class ConfigError(ValueError):
    """A config that cannot be read: the command line reports it in one line, without a traceback."""


def load_config(cls: type[C], path: str | Path, overrides: list[str] | None = None) -> C:
    """Read the dataclass ``cls`` from a YAML file (following ``extends:``), then apply ``key=value`` overrides."""
    data = read_yaml(path)
    for override in overrides or []:
        apply_override(data, override)
    return build_config(cls, data)


def read_yaml(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A YAML mapping, merged over the file its ``extends:`` names (relative to this file)."""
    path = Path(path).resolve()
    if path in _seen:
        raise ConfigError(f"{path}: 'extends' loops back to itself ({' -> '.join(str(p) for p in _seen)})")
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:  # a config nests a few levels; a crafted one could exhaust the parser's recursion
        data = yaml.safe_load(read_bytes(path, MAX_JSON_BYTES)) or {}
    except (yaml.YAMLError, RecursionError, ValueError) as err:
        raise ConfigError(f"{path}: not a readable YAML config ({type(err).__name__}: {str(err)[:200]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a YAML mapping, got {type(data).__name__}")
    base = data.pop("extends", None)
    if base is None:
        return data
    return merge(read_yaml(path.parent / base, (*_seen, path)), data)


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``update`` over ``base``: nested mappings merge key by key; lists and values are replaced whole."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def build_config(cls: type[C], data: dict[str, Any]) -> C:
    """Build the dataclass ``cls`` (and its nested sections) from plain data, checking keys and types."""
    return _build(cls, data, "")


def config_to_dict(config: Any) -> dict[str, Any]:
    """A config as plain YAML-safe data (tuples as lists), for ``flamingo config show`` and run records."""

    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return plain(dataclasses.asdict(config))


def apply_override(data: dict[str, Any], override: str) -> None:
    """``a.b.0.c=value`` → sets data["a"]["b"][0]["c"]; the value is parsed as YAML."""
    key, sep, raw = override.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {override!r} must look like key=value (e.g. optim.lr=3e-4)")
    set_path(data, key, yaml.safe_load(raw))


def set_path(data: dict[str, Any], key: str, value: Any) -> None:
    """Set the dotted ``key`` (list items by index) to ``value``, making mappings on the way."""
    node: Any = data
    parts = key.split(".")
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"override {key!r}: {'.'.join(parts[:i]) or 'root'} has no item {part!r}")
            part = int(part)
        elif not isinstance(node, dict):
            raise ConfigError(f"override {key!r}: {'.'.join(parts[:i])} is not a mapping")
        if last:
            node[part] = value
        else:
            if isinstance(node, dict) and part not in node:
                node[part] = {}
            node = node[part]


def _build(tp: Any, value: Any, path: str) -> Any:
    """Check ``value`` against the type annotation ``tp`` and build nested dataclasses."""
    where = path or "config"
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, got {value!r}")
        hints = typing.get_type_hints(tp)
        fields = {f.name for f in dataclasses.fields(tp) if f.init}
        unknown = sorted(set(value) - fields)
        if unknown:
            names = ", ".join(f"{path + '.' if path else ''}{k}" for k in unknown)
            raise ConfigError(f"unknown config key(s): {names} (known at {where}: {sorted(fields)})")
        kwargs = {k: _build(hints[k], v, f"{path + '.' if path else ''}{k}") for k, v in value.items()}
        try:
            return tp(**kwargs)
        except (TypeError, ValueError) as e:  # a section's own checks (__post_init__) name the section too
            raise ConfigError(f"{path}: {e}" if path else str(e)) from e
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _build(arg, value, path)
            except ValueError as e:
                errors.append(str(e))
        raise ConfigError(f"{where}: {value!r} matches none of {args} ({'; '.join(errors)})")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where} must be one of {list(args)}, got {value!r}")
        return value
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, got {value!r}")
        key_type, value_type = args or (Any, Any)
        return {_build(key_type, k, f"{path}.{k}"): _build(value_type, v, f"{path}.{k}") for k, v in value.items()}
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{where} must have {len(args)} items, got {value!r}")
            return tuple(_build(a, v, f"{path}.{i}") for i, (a, v) in enumerate(zip(args, value)))
        item = args[0] if args else Any
        built = [_build(item, v, f"{path}.{i}") for i, v in enumerate(value)]
        return tuple(built) if origin is tuple else built
    if tp is Any:
        return value
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # YAML reads 1e-4 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if isinstance(tp, type) and isinstance(value, tp) and not (tp is int and isinstance(value, bool)):
        return value
    raise ConfigError(f"{where} must be {getattr(tp, '__name__', tp)}, got {value!r}")
