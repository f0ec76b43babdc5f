import itertools
import math

import pytest
import torch

from flamingo_vlm.train import NonFiniteLossError, Trainer
from flamingo_vlm.train import trainer as trainer_module
from flamingo_vlm.train.build import build_mixture
from flamingo_vlm.train.config import OptimConfig
from flamingo_vlm.train.optim import lr_multiplier


@pytest.fixture()
def steps(make_config, tiny_model):
    """Three real mixture steps (web batch of 2 documents, pairs batch of 2), kept in memory."""
    return list(itertools.islice(build_mixture(make_config(), tiny_model()), 3))


def open_gates(model):
    """Gates at 0 give the cross-attention weights no gradient; open them to test real gradients."""
    with torch.no_grad():
        for block in model.language_model.gated_xattn:
            block.attn_gate.fill_(0.3)
            block.ff_gate.fill_(0.3)
    return model


def grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}


def test_lambda_weights_each_datasets_contribution(make_config, tiny_model, steps):
    step = {"web": (steps[0]["web"][0], 1.0), "pairs": (steps[0]["pairs"][0], 0.25)}
    trainer = Trainer(open_gates(tiny_model()), make_config(), [step])
    trainer.compute_gradients(step)
    got = grads(trainer.flamingo)

    reference = open_gates(tiny_model())
    for batch, weight in step.values():
        (weight * reference(**batch).loss).backward()  # the model's own mean loss, hand-weighted
    expected = grads(reference)
    assert got.keys() == expected.keys() and len(got) > 10
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-7, msg=name)
    # λ = 0 removes a dataset's contribution entirely
    trainer.optimizer.zero_grad(set_to_none=True)
    trainer.compute_gradients({"web": step["web"], "pairs": (step["pairs"][0], 0.0)})
    only_web = grads(trainer.flamingo)
    trainer.optimizer.zero_grad(set_to_none=True)
    trainer.compute_gradients({"web": step["web"]})
    for name, g in grads(trainer.flamingo).items():
        torch.testing.assert_close(only_web[name], g, rtol=1e-6, atol=1e-9)


def test_micro_batches_give_the_full_batch_gradient(make_config, tiny_model, steps):
    whole = Trainer(open_gates(tiny_model()), make_config(), steps)
    whole.compute_gradients(steps[0])
    config = make_config(optim=OptimConfig(grad_accum=2))
    split = Trainer(open_gates(tiny_model()), config, steps)
    split.compute_gradients(steps[0])
    a, b = grads(whole.flamingo), grads(split.flamingo)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-7, msg=name)


def test_gradients_are_clipped_once_per_optimiser_step(make_config, tiny_model, steps, monkeypatch):
    config = make_config(optim=OptimConfig(grad_accum=2, grad_clip=1e-3))
    trainer = Trainer(open_gates(tiny_model()), config, steps)
    backward_passes = []
    trainer.flamingo.resampler.latents.register_hook(lambda g: backward_passes.append(1))
    calls = []

    def spy(params, max_norm, *args, **kwargs):
        calls.append((len(backward_passes), max_norm))
        norm = real(params, max_norm, *args, **kwargs)
        assert torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params])) <= max_norm * 1.0001
        return norm

    real = trainer_module.clip_grad_norm_
    monkeypatch.setattr(trainer_module, "clip_grad_norm_", spy)
    for step in steps:
        result = trainer.train_step(step)
        assert result.grad_norm > 1e-3  # the clip was active
    # 2 datasets × 2 micro-batches = 4 backward passes per step, then exactly one clip
    assert calls == [(4, 1e-3), (8, 1e-3), (12, 1e-3)]


def test_nan_in_one_dataset_skips_the_step_and_training_continues(make_config, tiny_model, steps, caplog):
    trainer = Trainer(open_gates(tiny_model()), make_config(), steps)
    trainer.train_step(steps[0])
    before = {n: p.detach().clone() for n, p in trainer.flamingo.named_parameters() if p.requires_grad}
    adam_before = {i: {k: v.clone() for k, v in s.items()} for i, s in trainer.optimizer.state_dict()["state"].items()}
    lr_before = trainer.scheduler.get_last_lr()

    poisoned = {name: ({k: v.clone() for k, v in batch.items()}, w) for name, (batch, w) in steps[1].items()}
    poisoned["pairs"][0]["pixel_values"][0, 0, 0, 0, 0, 0] = float("nan")
    result = trainer.train_step(poisoned)
    assert result.skipped and math.isnan(result.losses["pairs"]) and math.isfinite(result.losses["web"])
    assert "non-finite" in caplog.text and trainer.state.skipped_steps == 1
    for name, param in trainer.flamingo.named_parameters():
        if param.requires_grad:
            assert torch.equal(param, before[name]), name
            assert param.grad is None  # nothing of the poisoned step is left to leak into the next one
    for i, s in trainer.optimizer.state_dict()["state"].items():
        assert all(torch.equal(v, adam_before[i][k]) for k, v in s.items())
    assert trainer.scheduler.get_last_lr() == lr_before and trainer.state.optimizer_steps == 1

    result = trainer.train_step(steps[2])  # the run goes on
    assert not result.skipped and trainer.state.consecutive_skips == 0 and trainer.state.optimizer_steps == 2
    assert any(not torch.equal(p, before[n]) for n, p in trainer.flamingo.named_parameters() if p.requires_grad)


def test_consecutive_non_finite_steps_abort(make_config, tiny_model, steps):
    poisoned = {name: ({k: v.clone() for k, v in batch.items()}, w) for name, (batch, w) in steps[0].items()}
    poisoned["web"][0]["pixel_values"].fill_(float("inf"))
    trainer = Trainer(tiny_model(), make_config(max_steps=5, max_consecutive_skips=3), itertools.repeat(poisoned))
    with pytest.raises(NonFiniteLossError, match="3 consecutive steps"):
        trainer.fit()
    assert trainer.state.step == 2 and trainer.state.skipped_steps == 3


def test_weight_decay_only_on_gated_block_matrices(make_config, tiny_model):
    trainer = Trainer(tiny_model(), make_config(), [])
    groups = {0.1: set(), 0.0: set()}  # learning-rate groups split further; gather by decay
    for g in trainer.optimizer.param_groups:
        groups[g["weight_decay"]] |= set(g["param_names"])
    decayed, plain = groups[0.1], groups[0.0]
    blocks = len(trainer.flamingo.language_model.gated_xattn)
    matrices = ("attn.to_q.weight", "attn.to_kv.weight", "attn.to_out.weight", "ff.1.weight", "ff.3.weight")
    assert decayed == {f"language_model.gated_xattn.{i}.{m}" for i in range(blocks) for m in matrices}
    trainable = {n for n, p in trainer.flamingo.named_parameters() if p.requires_grad}
    assert plain == trainable - decayed
    # no decay on gates, norms, resampler (latents and matrices alike) or the new token rows
    assert {
        f"language_model.gated_xattn.0.{g}" for g in ("attn_gate", "ff_gate", "attn.norm.weight", "ff.0.bias")
    } <= plain
    assert "resampler.latents" in plain and "resampler.layers.0.0.to_q.weight" in plain
    assert "language_model.new_tokens.input" in plain


def test_warmup_then_constant_or_cosine():
    constant = OptimConfig(warmup_steps=4)
    assert [lr_multiplier(s, constant, 10) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    cosine = OptimConfig(warmup_steps=2, schedule="cosine", min_lr_ratio=0.1)
    values = [lr_multiplier(s, cosine, 12) for s in range(13)]
    assert values[:3] == [0.5, 1.0, 1.0] and values[-1] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(values[2:], values[3:]))


def test_activation_checkpointing_gives_identical_gradients(make_config, tiny_model, steps):
    plain = Trainer(open_gates(tiny_model()), make_config(), steps)
    checkpointed = Trainer(open_gates(tiny_model()), make_config(activation_checkpointing=True), steps)
    layer = checkpointed.flamingo.lm.model.layers[0]
    assert layer.forward.func is torch.utils.checkpoint.checkpoint  # the layer really is checkpointed
    plain.compute_gradients(steps[0])
    checkpointed.compute_gradients(steps[0])
    a, b = grads(plain.flamingo), grads(checkpointed.flamingo)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_feature_cache_matches_pixels_and_is_reused(make_config, tiny_model, steps, tmp_path):
    plain = Trainer(open_gates(tiny_model()), make_config(), steps)
    cached = Trainer(open_gates(tiny_model()), make_config(feature_cache=str(tmp_path / "features")), steps)
    plain.compute_gradients(steps[0])
    cached.compute_gradients(steps[0])
    a, b = grads(plain.flamingo), grads(cached.flamingo)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-7, msg=name)
    n_media = sum(int(batch["media_mask"].sum()) for batch, _ in steps[0].values())
    assert (cached.feature_cache.hits, cached.feature_cache.misses) == (0, n_media)
    cached.compute_gradients(steps[0])  # a second epoch over the same images: all hits
    assert (cached.feature_cache.hits, cached.feature_cache.misses) == (n_media, n_media)


def test_lr_multipliers_scale_each_group_and_follow_the_schedule(make_config, tiny_model):
    config = make_config()
    config.optim.lr_multipliers = {"gates": 100.0, "resampler": 0.5}
    trainer = Trainer(tiny_model(), config, [])
    lrs = {name: g["lr"] for g in trainer.optimizer.param_groups for name in g["param_names"]}
    base = config.optim.lr * lr_multiplier(0, config.optim, config.max_steps)
    assert lrs["language_model.gated_xattn.0.attn_gate"] == pytest.approx(100 * base)
    assert lrs["resampler.latents"] == pytest.approx(0.5 * base)
    assert lrs["language_model.gated_xattn.0.attn.to_q.weight"] == pytest.approx(base)
    assert lrs["language_model.new_tokens.input"] == pytest.approx(base)
    trainer.scheduler.step()
    gate_group = next(
        g for g in trainer.optimizer.param_groups if "language_model.gated_xattn.0.ff_gate" in g["param_names"]
    )
    assert gate_group["lr"] == pytest.approx(100 * config.optim.lr * lr_multiplier(1, config.optim, config.max_steps))


def test_unknown_lr_group_is_named():
    from flamingo_vlm.train.config import TrainConfig

    with pytest.raises(ValueError, match="optim.lr_multipliers.gate"):
        TrainConfig.from_dict({"optim": {"lr_multipliers": {"gate": 100}}})
