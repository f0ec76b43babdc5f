import pytest
import torch

from flamingo_vlm.model.resampler import PerceiverResampler


def make(**kw):
    return PerceiverResampler(dim=16, depth=2, num_latents=5, heads=2, dim_head=8, max_frames=8, **kw)


@pytest.mark.parametrize("frames", [1, 8, 30])
def test_any_number_of_frames_gives_fixed_tokens(frames):
    out = make()(torch.randn(2, 3, frames, 7, 16))  # (b, n_media, t, v, d)
    assert out.shape == (2, 3, 5, 16)
    assert torch.isfinite(out).all()


def test_long_videos_interpolate_temporal_embeddings_linearly():
    r = make()
    emb = r.time_embeddings_for(30)
    assert emb.shape == (30, 16)
    torch.testing.assert_close(emb[0], r.time_embeddings[0])
    torch.testing.assert_close(emb[-1], r.time_embeddings[-1])
    # Frame 29·(k/7) lands exactly on trained embedding k when it is an integer position.
    stretched = r.time_embeddings_for(15)  # positions 0, 0.5, 1, ... in trained-frame units
    torch.testing.assert_close(stretched[2], r.time_embeddings[1])
    torch.testing.assert_close(stretched[1], (r.time_embeddings[0] + r.time_embeddings[1]) / 2)


def test_media_are_resampled_independently():
    r = make()
    x = torch.randn(1, 2, 1, 7, 16)
    y = x.clone()
    y[:, 1] = torch.randn(7, 16)
    a, b = r(x), r(y)
    torch.testing.assert_close(a[:, 0], b[:, 0])
    assert not torch.allclose(a[:, 1], b[:, 1])


def test_frame_order_matters_through_time_embeddings():
    r = make()
    x = torch.randn(1, 1, 2, 7, 16)
    assert not torch.allclose(r(x), r(x.flip(2)))


def test_gelu_option():
    out = make(activation="gelu")(torch.randn(1, 1, 1, 4, 16))
    assert out.shape == (1, 1, 5, 16)
