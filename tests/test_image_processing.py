"""FlamingoImageProcessor: letterboxing keeps the whole picture, and every input form gives the same pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from flamingo_vlm.image_processing import FlamingoImageProcessor

SIZE, MEAN, STD = 16, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


@pytest.fixture
def image_processor() -> FlamingoImageProcessor:
    return FlamingoImageProcessor(SIZE, MEAN, STD)


def solid(colour: tuple[int, int, int], size: tuple[int, int] = (20, 20)) -> Image.Image:
    return Image.new("RGB", size, colour)


def test_transform_keeps_aspect_and_pads_with_the_mean_colour(image_processor):
    wide = image_processor(solid((255, 0, 0), size=(40, 20)))  # 2:1 -> 16 x 8 picture, 4-row bands
    assert wide.shape == (3, SIZE, SIZE)
    assert torch.all(wide[:, :4] == 0) and torch.all(wide[:, -4:] == 0)  # mean colour normalises to 0
    red = (torch.tensor([1.0, 0.0, 0.0]) - torch.tensor(MEAN)) / torch.tensor(STD)
    assert torch.allclose(wide[:, 4:12], red.view(3, 1, 1).expand(3, 8, SIZE), atol=1e-5)

    tall = image_processor(solid((0, 0, 255), size=(10, 20)))  # 1:2 -> bands left and right
    assert torch.all(tall[:, :, :4] == 0) and torch.all(tall[:, :, -4:] == 0)
    assert not torch.any(tall[:, :, 4:12] == 0)


def test_arrays_match_pil_and_bad_arrays_are_named(image_processor):
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (12, 20, 3), dtype=np.uint8)
    expected = image_processor(Image.fromarray(array))
    assert torch.equal(image_processor(array), expected)
    assert torch.equal(image_processor(array.astype(np.float64) / 255), expected)
    grey = FlamingoImageProcessor(SIZE, (0.5,), (0.25,))
    assert grey(array[..., :1]).shape == (1, SIZE, SIZE)
    with pytest.raises(ValueError, match=r"an image array must be .* got \(2, 3, 5\)"):
        image_processor(np.zeros((2, 3, 5), dtype=np.uint8))
    with pytest.raises(ValueError, match="image arrays must be uint8 or float"):
        image_processor(np.zeros((4, 4), dtype=np.int32))
    with pytest.raises(ValueError, match="expected a PIL image or a numpy array, got list"):
        image_processor([[0, 1], [2, 3]])


def test_sixteen_bit_and_float_pictures_keep_their_brightness(image_processor):
    """Fuzz campaign: Pillow clips 16-bit greyscale at 255 when converting, so a 16-bit PNG came out white."""
    from flamingo_vlm.image_processing import convert_mode

    grey = np.full((20, 20), 100, np.uint8)
    sixteen = Image.fromarray(grey.astype(np.uint16) * 257)
    floats = Image.fromarray(grey.astype(np.float32) / 255)
    assert sixteen.mode == "I;16" and floats.mode == "F"
    for picture in (sixteen, sixteen.convert("I"), floats):
        assert np.array_equal(
            np.asarray(convert_mode(picture, "RGB")), np.asarray(Image.fromarray(grey).convert("RGB"))
        )
    assert torch.equal(image_processor(sixteen), image_processor(Image.fromarray(grey)))


def test_decoded_photos_are_turned_upright(image_processor):
    """Fuzz campaign: the EXIF orientation of a phone photo was ignored, so it was seen lying on its side."""
    import io

    from flamingo_vlm.data.decoding import decode_image

    upright_picture = Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 60, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned 90° anticlockwise: rotate 90° clockwise to view
    buffer = io.BytesIO()
    upright_picture.transpose(Image.Transpose.ROTATE_90).save(buffer, "PNG", exif=exif)
    assert decode_image(buffer.getvalue()).size == upright_picture.size
    assert np.array_equal(np.asarray(decode_image(buffer.getvalue())), np.asarray(upright_picture))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_arrays_are_refused_not_cast_to_pixels(image_processor, bad):
    array = np.full((8, 8, 3), 0.5, dtype=np.float32)
    array[2, 3] = bad  # one pixel is enough: the uint8 cast would turn it into an arbitrary colour
    nan, inf = (3, 0) if np.isnan(bad) else (0, 3)
    with pytest.raises(ValueError, match=rf"shape \(8, 8, 3\) holds {nan} NaN and {inf} infinite value\(s\) of"):
        image_processor(array)


def test_empty_images_and_tensors_are_refused(image_processor):
    with pytest.raises(ValueError, match=r"no pixels \(shape \(0, 0, 3\)\)"):
        image_processor(np.zeros((0, 0, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"no pixels \(width 0, height 0\)"):
        image_processor(Image.new("RGB", (0, 0)))
    with pytest.raises(ValueError, match=r"got a tensor of shape \(3, 8, 8\)"):
        image_processor(torch.full((3, 8, 8), float("nan")))
