import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from flamingo_vlm.pretrain import LMConfig, build_llama, pretrain_lm
from flamingo_vlm.pretrain.lm import packed_windows


def test_packed_windows_separate_documents_with_eos():
    it = packed_windows([[1, 2], [3]], eos_id=0, context=5, batch_size=2, seed=0)
    batch = next(it)
    assert batch.shape == (2, 5)
    flat = batch.flatten().tolist()
    assert all(t in (0, 1, 2, 3) for t in flat) and 0 in flat


def test_pretrained_lm_learns_and_loads_like_a_hub_model(tokenizer_dir, tmp_path):
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LMConfig(
        hidden_size=32,
        num_layers=2,
        num_heads=2,
        intermediate_size=64,
        context=32,
        steps=40,
        batch_size=8,
        lr=1e-2,
        warmup_steps=5,
    )
    torch.manual_seed(0)
    model = build_llama(tok, config)
    history = pretrain_lm(model, tok, ["the red square is above the blue circle."] * 10, config)
    assert history[-1] < 0.5 * history[0]
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    back = AutoModelForCausalLM.from_pretrained(tmp_path)
    ids = tok(["the red square"], return_tensors="pt").input_ids
    assert torch.equal(model(ids).logits, back(ids).logits)
