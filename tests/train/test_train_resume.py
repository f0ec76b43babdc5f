import json
from pathlib import Path

import pytest
import torch

from flamingo_vlm.train import Trainer
from flamingo_vlm.train.build import build_mixture, build_model
from flamingo_vlm.train.config import CheckpointConfig


def run(config):
    model = build_model(config)
    trainer = Trainer(model, config, build_mixture(config, model))
    summary = trainer.fit()
    return trainer, summary


def trainable(trainer):
    return {n: p.detach().clone() for n, p in trainer.flamingo.named_parameters() if p.requires_grad}


def assert_same_optimizer_state(a, b):
    sa, sb = a.optimizer.state_dict(), b.optimizer.state_dict()
    assert sa["state"].keys() == sb["state"].keys()
    for index in sa["state"]:
        for key, value in sa["state"][index].items():
            assert torch.equal(value, sb["state"][index][key]), (index, key)
    assert [g["lr"] for g in sa["param_groups"]] == [g["lr"] for g in sb["param_groups"]]


def test_resume_is_bit_identical(make_config, tmp_path):
    straight, summary = run(make_config(output_dir=str(tmp_path / "straight")))
    assert summary["steps"] == 10 and summary["skipped_steps"] == 0

    first, _ = run(make_config(output_dir=str(tmp_path / "split"), max_steps=5))
    second, summary = run(make_config(output_dir=str(tmp_path / "split"), max_steps=10, resume=True))
    assert second.state.step == 10 and summary["optimizer_steps"] == 10

    a, b = trainable(straight), trainable(second)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert_same_optimizer_state(straight, second)
    assert straight.scheduler.state_dict() == second.scheduler.state_dict()
    assert straight.steps.state_dict() == second.steps.state_dict()
    # the metrics of the resumed half continue the same curve
    lines = [json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    resumed = [json.loads(line) for line in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss/web"] for r in lines] == [r["loss/web"] for r in resumed]


def test_truncated_latest_checkpoint_falls_back_to_previous(make_config, tmp_path):
    config = make_config(max_steps=4, checkpoint=CheckpointConfig(every=2, keep_last=3))
    trainer, _ = run(config)
    checkpoints = trainer.checkpoints.checkpoints()
    assert [p.name for p in checkpoints] == ["step-00000002", "step-00000004"]
    weights = checkpoints[-1] / "flamingo.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])

    model = build_model(config)
    resumed = Trainer(model, config, build_mixture(config, model))
    with pytest.warns(UserWarning, match="step-00000004.*truncated"):
        assert resumed.resume()
    assert resumed.state.step == 2
    from safetensors.torch import load_file

    saved = load_file(checkpoints[0] / "flamingo.safetensors")
    for name, param in resumed.flamingo.named_parameters():
        if param.requires_grad:
            assert torch.equal(param, saved[name])


def test_checkpoint_is_a_flamingo_checkpoint_and_old_ones_are_pruned(make_config):
    from flamingo_vlm import Flamingo

    config = make_config(max_steps=6, checkpoint=CheckpointConfig(every=2, keep_last=2))
    trainer, summary = run(config)
    assert [p.name for p in trainer.checkpoints.checkpoints()] == ["step-00000004", "step-00000006"]
    loaded = Flamingo.from_pretrained(summary["checkpoint"])
    for name, param in trainer.flamingo.named_parameters():
        if param.requires_grad:
            assert torch.equal(param, dict(loaded.named_parameters())[name])


def test_checkpoint_with_0d_gates_resumes(make_config, tmp_path):
    """Training checkpoints written before the gates had shape (1,) (0-d gates and gate moments) resume."""
    from safetensors.torch import load_file, save_file

    from flamingo_vlm.train.checkpoint import write_manifest

    config = make_config(output_dir=str(tmp_path / "run"), max_steps=2, checkpoint=CheckpointConfig(every=2))
    trainer, _ = run(config)
    path = trainer.checkpoints.checkpoints()[-1]
    trainer_state = json.loads((path / "trainer_state.json").read_text())
    gate_ids = {
        str(i)
        for i, name in enumerate(n for g in trainer_state["optimizer"]["param_groups"] for n in g["param_names"])
        if name.endswith("_gate")
    }
    for name, is_gate in (
        ("flamingo.safetensors", lambda k: k.endswith("_gate")),
        ("optimizer.safetensors", lambda k: k.split(".")[0] in gate_ids and not k.endswith(".step")),
    ):
        tensors = load_file(path / name)
        assert any(is_gate(k) for k in tensors)
        save_file({k: v.reshape(()) if is_gate(k) else v for k, v in tensors.items()}, path / name)
    write_manifest(path)

    model = build_model(config)
    resumed = Trainer(model, config, build_mixture(config, model))
    assert resumed.resume() and resumed.state.step == 2
    for name, value in trainable(trainer).items():
        assert torch.equal(dict(resumed.flamingo.named_parameters())[name], value), name
    assert_same_optimizer_state(trainer, resumed)


def test_full_disk_during_a_save_stops_with_a_clear_error_and_keeps_the_previous_checkpoint(make_config, monkeypatch):
    """safetensors reports ENOSPC as its own SafetensorError ("... (os error 28)"): the save must turn it into
    a CheckpointError naming the disk, remove its partial files, and leave the previous checkpoint to resume."""
    from safetensors import SafetensorError

    import flamingo_vlm.io as fio
    from flamingo_vlm.train.checkpoint import CheckpointError, verify

    real, calls = fio.save_file, []

    def full_disk(tensors, filename, metadata=None):
        calls.append(filename)
        real(tensors, filename, metadata=metadata)
        if len(calls) > 3:  # the second checkpoint's first safetensors file: half written, then the disk is full
            with open(filename, "r+b") as f:
                f.truncate(10)
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(fio, "save_file", full_disk)
    config = make_config(max_steps=4, checkpoint=CheckpointConfig(every=2, keep_last=3))
    with pytest.raises(CheckpointError, match=r"step-00000004 .*No space left on device.*step-00000002 is intact"):
        run(config)
    directory = Path(config.output_dir) / "checkpoints"
    assert sorted(p.name for p in directory.iterdir()) == ["step-00000002"]  # nothing partial, visible or hidden
    verify(directory / "step-00000002")
    monkeypatch.setattr(fio, "save_file", real)
    model = build_model(config)
    assert Trainer(model, config, build_mixture(config, model)).resume()


def test_keep_last_never_prunes_the_checkpoint_just_written(make_config):
    """A damaged newer checkpoint (skipped by the resume) must not count towards keep_last: with keep_last=1
    it would otherwise prune the checkpoint just written, leaving only the damaged one."""
    from flamingo_vlm.train.checkpoint import verify

    run(make_config(max_steps=4, checkpoint=CheckpointConfig(every=2, keep_last=2)))
    config = make_config(max_steps=3, resume=True, checkpoint=CheckpointConfig(every=1, keep_last=1))
    directory = Path(config.output_dir) / "checkpoints"
    (directory / "step-00000004" / "optimizer.safetensors").write_bytes(b"damaged")
    with pytest.warns(UserWarning, match="step-00000004"):
        trainer, _ = run(config)
    names = [p.name for p in trainer.checkpoints.checkpoints()]
    assert names == ["step-00000003", "step-00000004"]  # step 2 pruned; the damaged step 4 is not this run's
    verify(directory / "step-00000003")


def test_a_crash_while_pruning_leaves_no_half_deleted_checkpoint(make_config, monkeypatch):
    """Pruning renames a checkpoint to a hidden name before deleting it: a crash mid-delete never leaves a
    ``step-*`` that readers would find damaged, and the next save sweeps the leftover."""
    import shutil

    import flamingo_vlm.train.checkpoint as ckpt

    real_rmtree = shutil.rmtree

    def crash_midway(path, ignore_errors=False):
        path = Path(path)
        if path.name.endswith(".deleting") and path.is_dir():
            next(path.iterdir()).unlink()  # one file gone, then the process dies
            raise KeyboardInterrupt
        real_rmtree(path, ignore_errors=ignore_errors)

    monkeypatch.setattr(ckpt.shutil, "rmtree", crash_midway)
    config = make_config(max_steps=3, checkpoint=CheckpointConfig(every=1, keep_last=2))
    with pytest.raises(KeyboardInterrupt):
        run(config)
    directory = Path(config.output_dir) / "checkpoints"
    for path in ckpt.CheckpointManager(directory).checkpoints():
        ckpt.verify(path)  # every visible checkpoint is whole
    assert (directory / ".step-00000001.deleting").is_dir()
    monkeypatch.setattr(ckpt.shutil, "rmtree", real_rmtree)
    run(make_config(max_steps=4, resume=True, checkpoint=CheckpointConfig(every=1, keep_last=2)))
    assert sorted(p.name for p in directory.iterdir()) == ["step-00000003", "step-00000004"]


def test_metrics_of_steps_after_the_last_checkpoint_are_replaced_on_resume(make_config):
    """A run killed after logging steps past its last checkpoint (the last line possibly torn) resumes with
    one record per step: the resumed run's records replace the lost steps' instead of repeating them."""
    run(make_config(max_steps=4, checkpoint=CheckpointConfig(every=2)))
    config = make_config(max_steps=6, resume=True, checkpoint=CheckpointConfig(every=2))
    metrics = Path(config.output_dir) / "metrics.jsonl"
    with open(metrics, "a") as f:
        f.write(json.dumps({"step": 5, "loss/web": 1.0}) + "\n" + '{"step": 6, "loss/w')  # killed mid-line
    run(config)
    assert [json.loads(line)["step"] for line in metrics.read_text().splitlines()] == [1, 2, 3, 4, 5, 6]


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_fsdp_metadata_is_unpickled_without_running_code(tmp_path):
    """torch.distributed.checkpoint pickles ``.metadata``; a crafted one must be refused, not executed."""
    import pickle

    import torch.distributed.checkpoint as dcp

    from flamingo_vlm.train.checkpoint import CheckpointError, SafeFileSystemReader

    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 2)).sum().backward()
    optimizer.step()
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
    with pytest.warns(UserWarning):  # single process: dcp says it assumes no process group
        dcp.save(state, checkpoint_id=str(tmp_path / "good"))
    restored = {"model": torch.nn.Linear(2, 2).state_dict(), "optimizer": state["optimizer"]}
    dcp.load(restored, storage_reader=SafeFileSystemReader(str(tmp_path / "good")))  # a real checkpoint loads
    assert torch.equal(restored["model"]["weight"], model.weight)

    marker = tmp_path / "MARKER"
    (tmp_path / "good" / ".metadata").write_bytes(pickle.dumps(_RunsCode(marker)))
    with pytest.raises(CheckpointError, match="posix.system is not part of a checkpoint's metadata"):
        SafeFileSystemReader(str(tmp_path / "good")).read_metadata()
    assert not marker.exists()
