"""Block-level masking: what a gated block's cross-attention output may depend on."""

import pytest
import torch

from flamingo_vlm.model.masking import last_media_index, media_attention_mask
from flamingo_vlm.model.xattn import GatedCrossAttentionDense

M = 9
IDS = torch.tensor([[1, 2, M, 3, 4, M, 5, M, 6]])  # three images; tokens 0-1 come before any
N_MEDIA = 3


def block(qk_norm=False):
    b = GatedCrossAttentionDense(dim=16, dim_visual=12, heads=2, dim_head=8, qk_norm=qk_norm)
    with torch.no_grad():
        b.attn_gate.fill_(0.7)
        b.ff_gate.fill_(0.3)
    return b


def xattn_out(blk, y, media, mode):
    attend = media_attention_mask(last_media_index(IDS, M), N_MEDIA, mode)
    return blk.attn(y, blk.attn.project_media(media), attend)


@pytest.mark.parametrize("mode", ["previous", "all_previous"])
@pytest.mark.parametrize("qk_norm", [False, True])
def test_each_token_depends_on_exactly_the_allowed_images(mode, qk_norm):
    blk = block(qk_norm)
    y = torch.randn(1, IDS.shape[1], 16)
    media = torch.randn(1, N_MEDIA, 4, 12)
    base = xattn_out(blk, y, media, mode)
    phi = last_media_index(IDS, M)[0]
    for j in range(N_MEDIA):
        changed = media.clone()
        changed[:, j] = torch.randn(4, 12)
        diff = (xattn_out(blk, y, changed, mode) - base).abs().amax(-1)[0]  # (L,)
        for pos in range(IDS.shape[1]):
            allowed = phi[pos] == j + 1 if mode == "previous" else 0 < j + 1 <= phi[pos]
            if allowed:
                assert diff[pos] > 0, (mode, j, pos)
            else:
                assert diff[pos] == 0, (mode, j, pos)


def test_tokens_without_media_get_exact_zeros():
    blk = block()
    out = xattn_out(blk, torch.randn(1, IDS.shape[1], 16), torch.randn(1, N_MEDIA, 4, 12), "previous")
    assert torch.equal(out[0, :2], torch.zeros(2, 16))


def test_closed_gates_are_the_identity():
    blk = GatedCrossAttentionDense(dim=16, dim_visual=12, heads=2, dim_head=8)
    y = torch.randn(1, IDS.shape[1], 16)
    media = torch.randn(1, N_MEDIA, 4, 12)
    attend = media_attention_mask(last_media_index(IDS, M), N_MEDIA, "previous")
    assert torch.equal(blk(y, blk.attn.project_media(media), attend), y)


def test_gates_are_named_scalars_initialised_at_zero():
    blk = GatedCrossAttentionDense(dim=16, dim_visual=12)
    assert blk.attn_gate.shape == (1,) and blk.ff_gate.shape == (1,)
    assert blk.attn_gate.item() == 0.0 and blk.ff_gate.item() == 0.0


def test_0d_gates_of_older_checkpoints_load_as_shape_1():
    blk = GatedCrossAttentionDense(dim=16, dim_visual=12, heads=2, dim_head=8)
    state = {k: v.clone() for k, v in blk.state_dict().items()}
    state["attn_gate"], state["ff_gate"] = torch.tensor(0.25), torch.tensor(-0.5)  # 0-d, as written before
    blk.load_state_dict(state)
    assert blk.attn_gate.shape == blk.ff_gate.shape == (1,)
    assert (blk.attn_gate.item(), blk.ff_gate.item()) == (0.25, -0.5)
