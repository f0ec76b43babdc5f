"""The vision-use probe: shuffling is a derangement of the real media, and its gaps mean what they say."""

from __future__ import annotations

import pytest
import torch

from flamingo_vlm.model.vision_use import shuffle_media


def test_shuffle_moves_every_real_medium_and_keeps_the_layout():
    pixels = torch.arange(3 * 2, dtype=torch.float32).view(3, 2, 1, 1, 1, 1).expand(3, 2, 1, 3, 4, 4).clone()
    media_mask = torch.tensor([[True, True], [True, False], [True, False]])
    batch = {"pixel_values": pixels, "media_mask": media_mask}
    out = shuffle_media(batch)["pixel_values"]
    real_before, real_after = pixels[media_mask][:, 0, 0, 0, 0], out[media_mask][:, 0, 0, 0, 0]
    assert sorted(real_after.tolist()) == sorted(real_before.tolist())  # the same media, redistributed
    assert (real_after != real_before).all()  # none stays in its slot
    assert torch.equal(out[~media_mask], pixels[~media_mask])  # padding slots untouched
    with pytest.raises(ValueError, match="at least two"):
        shuffle_media({"pixel_values": pixels[:1], "media_mask": torch.tensor([[True, False]])})
