"""Image transforms: one picture → the normalised ``(c, h, w)`` tensor a vision encoder takes.

As in Hugging Face (``image_processing_*.py`` beside ``processing_*.py``), pixels are handled here and
:class:`~flamingo_vlm.processing.FlamingoProcessor` combines them with text.  The data pipeline and
contrastive pre-training take any :data:`ImageTransform`; a :class:`FlamingoImageProcessor` is one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps

# One picture: a PIL image, or an (h, w[, c]) uint8 / [0, 1] float array.
Frame = Image.Image | np.ndarray
ImageTransform = Callable[[Image.Image], torch.Tensor]  # PIL → (c, h, w)


class FlamingoImageProcessor:
    """Letterboxes a picture to ``image_size`` and normalises it with the encoder's mean and std.

    ``image_mean`` and ``image_std`` have one entry per channel: 3 for RGB, 1 for greyscale (the
    picture is converted to match).  :class:`~flamingo_vlm.processing.ProcessorConfig` validates them.
    """

    def __init__(self, image_size: int, image_mean: Sequence[float], image_std: Sequence[float]) -> None:
        self.image_size = image_size
        self.num_channels = len(image_mean)
        self._mean = torch.tensor(tuple(image_mean)).view(-1, 1, 1)  # (c, 1, 1)
        self._std = torch.tensor(tuple(image_std)).view(-1, 1, 1)  # (c, 1, 1)

    def __call__(self, image: Frame) -> torch.Tensor:
        """One picture → normalised ``(c, image_size, image_size)`` float32 tensor.

        The image is resized so its longer side is ``image_size`` and padded (centred) to a square
        with the *mean* colour rather than cropped: nothing in the picture is lost (counting and
        position questions depend on the edges), and after normalisation the bands are exactly 0,
        the input the vision encoder's statistics treat as "no signal".
        """
        pil = convert_mode(_to_pil(image), "RGB" if self.num_channels == 3 else "L")
        size = self.image_size
        w, h = pil.size
        if not (w and h):
            raise ValueError(f"an image has no pixels (width {w}, height {h})")
        scale = size / max(w, h)
        new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
        if (new_w, new_h) != (w, h):
            pil = pil.resize((new_w, new_h), Image.Resampling.BICUBIC)
        pixels = torch.from_numpy(np.array(pil, dtype=np.uint8)).float().div_(255)  # (h, w[, c])
        pixels = pixels.view(new_h, new_w, -1).permute(2, 0, 1)  # (c, h, w)
        canvas = self._mean.expand(-1, size, size).clone()  # (c, size, size)
        top, left = (size - new_h) // 2, (size - new_w) // 2
        canvas[:, top : top + new_h, left : left + new_w] = pixels
        return (canvas - self._mean) / self._std  # (c, size, size)


def upright(image: Image.Image) -> Image.Image:
    """A decoded photo turned the way its camera's EXIF orientation says it is viewed (as browsers show it).

    Phones store pictures sideways and record the rotation in EXIF; without this, the model would be
    trained and evaluated on pictures lying on their side.
    """
    return ImageOps.exif_transpose(image)


def convert_mode(image: Image.Image, mode: str) -> Image.Image:
    """``image.convert(mode)``, keeping the brightness of high-bit-depth pictures.

    Pillow converts 16-bit greyscale (``I;16``, ``I``) to 8 bits by clipping at 255, which turns a
    16-bit PNG white; it is scaled instead (``/ 257``). Float pictures (``F``) are taken to lie in [0, 1],
    as float arrays are.
    """
    if image.mode.startswith("I"):
        scaled = np.asarray(image, dtype=np.float64) / 257
    elif image.mode == "F":
        scaled = np.asarray(image, dtype=np.float64) * 255
    else:
        return image.convert(mode)
    return Image.fromarray(scaled.clip(0, 255).round().astype(np.uint8)).convert(mode)


def _to_pil(image: Frame) -> Image.Image:
    """PIL images pass through; arrays (uint8, or float in [0, 1]) become PIL images.

    Float arrays are quantised to uint8 so every input goes through the same PIL resampling, and an
    image given as a file, a PIL image or an array yields the same tensor.  NaN or infinite values are
    refused: the uint8 cast would silently turn them into arbitrary pixels.  Tensors are refused too, since
    their layout is ambiguous (``(c, h, w)`` by torch convention, ``(h, w, c)`` here).
    """
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, torch.Tensor):
        raise ValueError(
            f"expected a PIL image or a numpy array, got a tensor of shape {tuple(image.shape)}: "
            "pass tensor.permute(1, 2, 0).numpy() for a (c, h, w) tensor"
        )
    if not isinstance(image, np.ndarray):
        raise ValueError(f"expected a PIL image or a numpy array, got {type(image).__name__}")
    array = image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ValueError(f"an image array must be (h, w), (h, w, 1), (h, w, 3) or (h, w, 4), got {image.shape}")
    if not array.size:
        raise ValueError(f"an image array has no pixels (shape {image.shape})")
    if np.issubdtype(array.dtype, np.floating):
        if not (finite := np.isfinite(array)).all():
            n_nan = int(np.isnan(array).sum())
            raise ValueError(
                f"image array of shape {image.shape} holds {n_nan} NaN and {int((~finite).sum()) - n_nan} "
                f"infinite value(s) of {array.size}"
            )
        if array.min() < 0 or array.max() > 1:
            raise ValueError(f"float image arrays must lie in [0, 1], got [{array.min()}, {array.max()}]")
        array = (array * 255).round()
    elif array.dtype != np.uint8:
        raise ValueError(f"image arrays must be uint8 or float in [0, 1], got {array.dtype}")
    return Image.fromarray(array.astype(np.uint8))
