"""flamingo_vlm: Flamingo visual language models (Alayrac et al., 2022)."""

from flamingo_vlm.config import FlamingoConfig
from flamingo_vlm.image_processing import FlamingoImageProcessor
from flamingo_vlm.model import Flamingo, FlamingoOutput
from flamingo_vlm.processing import FlamingoProcessor
from flamingo_vlm.tokenization import EOC_TOKEN, MEDIA_TOKEN

__all__ = [
    "EOC_TOKEN",
    "MEDIA_TOKEN",
    "Flamingo",
    "FlamingoConfig",
    "FlamingoImageProcessor",
    "FlamingoOutput",
    "FlamingoProcessor",
]
__version__ = "0.1.0"
