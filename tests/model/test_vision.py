import pytest
import torch
from tiny import IMAGE_SIZE

from flamingo_vlm.model.nfnet import NFNetConfig, NFNetEncoder
from flamingo_vlm.model.vision import load_vision_encoder


@pytest.mark.parametrize("name,tokens", [("nfnet", 16), ("clip", 16), ("siglip", 16)])
def test_adapters_load_from_directories_and_share_one_protocol(vision_dirs, name, tokens):
    enc = load_vision_encoder(vision_dirs[name])
    assert enc.reference == vision_dirs[name]
    assert enc.image_size == IMAGE_SIZE and len(enc.image_mean) == len(enc.image_std) == 3
    feats = enc(torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE))
    assert feats.shape == (2, tokens, enc.hidden_size)  # 4×4 grids; CLIP drops its CLS token


def test_nfnet_round_trip(tmp_path):
    enc = NFNetEncoder(NFNetConfig(image_size=32, stem_width=8, widths=(8, 16), depths=(2, 1), hidden_size=12))
    enc.save_pretrained(tmp_path)
    back = load_vision_encoder(str(tmp_path))
    x = torch.randn(3, 3, 32, 32)
    assert isinstance(back, NFNetEncoder)
    assert torch.equal(enc(x), back(x))


def test_nfnet_keeps_activations_normalised_without_batch_norm():
    enc = NFNetEncoder(NFNetConfig(image_size=64, depths=(2, 2, 2, 2)))
    with torch.no_grad():
        h = enc.blocks(enc.stem(torch.randn(8, 3, 64, 64)))
    assert 0.2 < h.std().item() < 5.0  # signal propagation holds through 8 residual blocks


def test_nfnet_rejects_sizes_its_stages_cannot_divide():
    with pytest.raises(ValueError, match="multiple of 32"):
        NFNetConfig(image_size=48, widths=(8, 8, 8, 8), depths=(1, 1, 1, 1))


def test_unknown_specs_are_named(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "resnet"}')
    with pytest.raises(ValueError, match="model_type 'resnet'"):
        load_vision_encoder(str(tmp_path))
    with pytest.raises(ValueError, match="unknown vision module Linear"):
        load_vision_encoder(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("kind", ["clip", "nfnet"])
def test_vision_dir_with_pickled_weights_is_refused_without_running_them(vision_dirs, tmp_path, kind):
    import shutil

    from tiny import replace_weights_with_pickle

    encoder = shutil.copytree(vision_dirs[kind], tmp_path / kind)
    marker = replace_weights_with_pickle(encoder)
    match = "pickled weights were refused" if kind == "clip" else r"model\.safetensors does not exist"
    with pytest.raises(ValueError, match=match):
        load_vision_encoder(str(encoder))
    assert not marker.exists()
