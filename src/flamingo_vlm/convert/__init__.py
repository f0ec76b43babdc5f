"""Loaders for checkpoints trained by other Flamingo implementations."""

from flamingo_vlm.convert.openflamingo import from_openflamingo, load_openflamingo_state_dict

__all__ = ["from_openflamingo", "load_openflamingo_state_dict"]
