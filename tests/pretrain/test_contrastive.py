import itertools

import torch

from flamingo_vlm.model.nfnet import NFNetConfig, NFNetEncoder
from flamingo_vlm.pretrain import ContrastiveConfig, pretrain_vision_encoder

COLOURS = {"red": (1.0, -1.0, -1.0), "green": (-1.0, 1.0, -1.0), "blue": (-1.0, -1.0, 1.0), "grey": (0.0, 0.0, 0.0)}


def colour_batches(tokenizer):
    names = list(COLOURS)
    enc = tokenizer([f"a {n} image" for n in names], padding=True, return_tensors="pt")
    pixels = torch.stack([torch.tensor(COLOURS[n]).view(3, 1, 1).expand(3, 32, 32) for n in names])
    g = torch.Generator().manual_seed(0)
    while True:
        noisy = pixels + 0.3 * torch.randn(pixels.shape, generator=g)
        yield {"pixel_values": noisy[:, None, None], "input_ids": enc.input_ids, "attention_mask": enc.attention_mask}


def test_contrastive_pretraining_learns_to_match_images_and_captions(tokenizer_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    vision = NFNetEncoder(NFNetConfig(image_size=32, stem_width=8, widths=(8, 16), depths=(1, 1), hidden_size=16))
    before = {k: v.clone() for k, v in vision.state_dict().items()}
    config = ContrastiveConfig(
        steps=60, lr=3e-3, warmup_steps=5, embed_dim=16, text_width=32, text_layers=1, text_heads=2
    )
    history = pretrain_vision_encoder(vision, colour_batches(tok), len(tok), config)
    assert sum(history[-10:]) / 10 < 0.5 * sum(history[:5]) / 5
    assert any(not torch.equal(before[k], v) for k, v in vision.state_dict().items())
    assert not any(p.requires_grad for p in vision.parameters()) and not vision.training  # handed back frozen
    # The trained encoder separates the colours: nearest neighbours in feature space share a colour.
    batch = next(itertools.islice(colour_batches(tok), 3, None))
    with torch.no_grad():
        feats = torch.nn.functional.normalize(vision(batch["pixel_values"][:, 0, 0]).mean(1), dim=-1)
    sims = feats @ feats.T
    assert (sims.diag() > sims.masked_fill(torch.eye(4, dtype=torch.bool), -1).amax(1) - 1e-6).all()
