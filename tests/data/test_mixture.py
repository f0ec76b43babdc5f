import itertools
import logging
import random

import pytest
import torch
from data_fixtures import image_bytes, transform, write_shard

from flamingo_vlm.data import ImageTextDataset, Mixture, MixtureComponent, ShardDataset, Slot, collate
from flamingo_vlm.data.skips import BadSample


class KeyDataset(ShardDataset):
    """Yields each record's key: lets the tests see exactly which records a slot reads."""

    def decode(self, record, rng: random.Random):
        if record["__key__"].startswith("bad"):
            raise BadSample("bad_record")
        return {"key": f"{record['__url__'][-7:]}/{record['__key__']}"}


@pytest.fixture()
def key_shards(tmp_path):
    return [
        write_shard(tmp_path / f"k{s:02d}.tar", [{"__key__": f"r{i}", "txt": "x"} for i in range(5)]) for s in range(4)
    ]


def first_epoch_keys(dataset, slot):
    keys = []
    for s in dataset.samples(slot):
        if s["__position__"].epoch > 0:
            return keys
        keys.append(s["key"])


def test_ranks_and_workers_see_disjoint_shards(key_shards):
    dataset = KeyDataset(key_shards, shuffle_buffer=8)
    ranks = [first_epoch_keys(dataset, Slot(rank=r, world_size=2)) for r in range(2)]
    shards = [{k.split("/")[0] for k in keys} for keys in ranks]
    assert not shards[0] & shards[1] and len(shards[0]) == len(shards[1]) == 2
    assert sorted(ranks[0] + ranks[1]) == sorted(first_epoch_keys(dataset, Slot()))  # together: everything once
    # more slots than shards: ranks split shards, workers split their rank's records
    slots = [first_epoch_keys(dataset, Slot(r, 2, w, 3)) for r in range(2) for w in range(3)]
    flat = [k for keys in slots for k in keys]
    assert len(flat) == len(set(flat)) == 20


def test_epochs_reshuffle_and_seed_determines_order(key_shards):
    a = KeyDataset(key_shards, seed=1).samples(Slot())
    b = KeyDataset(key_shards, seed=1).samples(Slot())
    c = KeyDataset(key_shards, seed=2).samples(Slot())
    first = [next(a)["key"] for _ in range(40)]
    assert first == [next(b)["key"] for _ in range(40)]
    assert first != [next(c)["key"] for _ in range(40)]
    assert sorted(first[:20]) == sorted(first[20:]) and first[:20] != first[20:]


@pytest.fixture()
def pair_shards(tmp_path):
    """Two datasets: 'red' captions (one bad record) and 'blue' captions, 3 shards each."""
    shards = {}
    for name in ("red", "blue"):
        shards[name] = []
        for s in range(3):
            records = [
                {"__key__": f"{name}{s}_{i}", "png": image_bytes(color=(40 * s, 10 * i, 0)), "txt": f"{name} {s} {i}"}
                for i in range(4)
            ]
            if name == "red" and s == 0:
                records[1]["png"] = b"broken"
            shards[name].append(write_shard(tmp_path / f"{name}{s}.tar", records))
    return shards


def make_mixture(pair_shards, tokenizer, **kwargs):
    return Mixture(
        [
            MixtureComponent(
                ImageTextDataset(pair_shards["red"], tokenizer, transform, max_length=16), 1.0, 2, name="red"
            ),
            MixtureComponent(
                ImageTextDataset(pair_shards["blue"], tokenizer, transform, max_length=16), 0.2, 3, name="blue"
            ),
        ],
        **kwargs,
    )


def fingerprint(steps):
    return [{name: (batch["input_ids"].tolist(), weight) for name, (batch, weight) in step.items()} for step in steps]


def test_accumulate_draws_every_dataset_each_step(pair_shards, tokenizer, caplog):
    mixture = make_mixture(pair_shards, tokenizer, seed=0)
    with caplog.at_level(logging.WARNING):
        steps = list(itertools.islice(mixture, 10))  # past one epoch of each dataset
    for step in steps:
        assert set(step) == {"red", "blue"}
        (red, red_weight), (blue, blue_weight) = step["red"], step["blue"]
        assert (red_weight, blue_weight) == (1.0, 0.2)
        assert red["input_ids"].shape == (2, 16) and blue["pixel_values"].shape == (3, 1, 1, 3, 16, 16)
        assert set(red) == {"input_ids", "attention_mask", "labels", "pixel_values", "media_mask"}
    # 20 red samples: all of epoch 0 (11 good records + the broken one) and part of epoch 1
    assert (
        set(mixture.skipped["red"]) == {"undecodable_image"} and 1 <= mixture.skipped["red"]["undecodable_image"] <= 2
    )
    assert not mixture.skipped["blue"]
    assert "red: skipped undecodable_image=1" in caplog.text


def test_round_robin_alternates(pair_shards, tokenizer):
    steps = list(itertools.islice(make_mixture(pair_shards, tokenizer, schedule="round_robin"), 6))
    assert [list(step) for step in steps] == [["red"], ["blue"]] * 3


def test_a_dataset_joins_at_its_start_step(pair_shards, tokenizer):
    mixture = make_mixture(pair_shards, tokenizer)
    mixture.components[0].start_step = 3  # red joins at step 3: blue alone before
    steps = list(itertools.islice(mixture, 5))
    assert [sorted(step) for step in steps] == [["blue"]] * 3 + [["blue", "red"]] * 2
    assert mixture.state_dict()["datasets"]["red"]["batches"] == 2


def test_same_seed_same_stream_different_seed_different_stream(pair_shards, tokenizer):
    def run(seed):
        return fingerprint(itertools.islice(make_mixture(pair_shards, tokenizer, seed=seed), 5))

    assert run(3) == run(3)
    assert run(3) != run(4)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_restored_state_continues_the_same_stream(pair_shards, tokenizer, num_workers):
    uninterrupted = make_mixture(pair_shards, tokenizer, seed=5, num_workers=num_workers)
    reference = fingerprint(itertools.islice(uninterrupted, 9))
    first = make_mixture(pair_shards, tokenizer, seed=5, num_workers=num_workers)
    stream = iter(first)
    head = fingerprint(itertools.islice(stream, 5))
    state = first.state_dict()
    del stream
    resumed = make_mixture(pair_shards, tokenizer, seed=5, num_workers=num_workers)
    resumed.load_state_dict(state)
    assert head + fingerprint(itertools.islice(resumed, 4)) == reference
    assert resumed.skipped == uninterrupted.skipped and resumed.state_dict() == uninterrupted.state_dict()


def test_state_from_other_worker_count_is_rejected(pair_shards, tokenizer):
    state = make_mixture(pair_shards, tokenizer).state_dict()
    with pytest.raises(ValueError, match="workers"):
        make_mixture(pair_shards, tokenizer, num_workers=2).load_state_dict(state)


def test_collate_pads_media_slots():
    def sample(n):
        return {
            "input_ids": torch.zeros(4, dtype=torch.long),
            "attention_mask": torch.ones(4, dtype=torch.long),
            "labels": torch.zeros(4, dtype=torch.long),
            "pixel_values": torch.ones(n, 1, 3, 2, 2),
            "media_mask": torch.ones(n, dtype=torch.bool),
            "__position__": None,
        }

    batch = collate([sample(1), sample(3)])
    assert batch["pixel_values"].shape == (2, 3, 1, 3, 2, 2) and "__position__" not in batch
    assert batch["media_mask"].tolist() == [[True, False, False], [True, True, True]]
    assert batch["pixel_values"][0, 1:].abs().sum() == 0 and batch["pixel_values"][1].min() == 1
