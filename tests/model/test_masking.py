import torch

from flamingo_vlm.model.masking import last_media_index, media_attention_mask

M = 9  # the media token id in these tests


def test_phi_counts_media_at_or_before_each_token():
    ids = torch.tensor([[5, M, 1, 2, M, 3], [0, 0, M, 4, 4, 4]])  # row 1 is left-padded (pad id 0)
    assert last_media_index(ids, M).tolist() == [[0, 1, 1, 1, 2, 2], [0, 0, 1, 1, 1, 1]]


def test_previous_mode_sees_only_last_image():
    phi = torch.tensor([[0, 1, 2, 2, 3]])
    mask = media_attention_mask(phi, num_media=3, mode="previous")[0]
    assert mask.tolist() == [
        [False, False, False],
        [True, False, False],
        [False, True, False],
        [False, True, False],
        [False, False, True],
    ]


def test_all_previous_mode_sees_every_earlier_image():
    phi = torch.tensor([[0, 1, 3]])
    mask = media_attention_mask(phi, num_media=4, mode="all_previous")[0]
    assert mask.tolist() == [[False] * 4, [True, False, False, False], [True, True, True, False]]


def test_padding_media_slots_are_never_attended():
    # A row with one real image among 3 slots: φ never exceeds 1, so slots 2 and 3 stay unseen.
    ids = torch.tensor([[M, 1, 1, 1]])
    for mode in ("previous", "all_previous"):
        mask = media_attention_mask(last_media_index(ids, M), num_media=3, mode=mode)
        assert not mask[..., 1:].any()
