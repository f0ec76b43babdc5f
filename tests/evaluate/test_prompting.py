"""Exact prompt strings, zero-shot text-only examples, and RICES ordering."""

from __future__ import annotations

import random

import pytest
import torch

from flamingo_vlm.evaluate.prompting import PromptTemplate, build_prompt, sample_support
from flamingo_vlm.evaluate.rices import Rices, RicesFeatureStore
from flamingo_vlm.evaluate.tasks.base import CAPTION_TEMPLATE, OPEN_ENDED_TEMPLATE_VQA, Example
from flamingo_vlm.evaluate.tasks.hateful_memes import HATEFUL_MEMES_TEMPLATE

VQA = PromptTemplate(OPEN_ENDED_TEMPLATE_VQA)


def qa(i: int, answer: str = "") -> Example:
    return Example(id=str(i), media=(f"img{i}.jpg",), fields={"question": f"q{i}?"}, answer=answer or f"a{i}")


def test_four_shot_vqa_prompt_exact() -> None:
    support = [qa(i) for i in range(4)]
    prompt = build_prompt(VQA, qa(9), support)
    assert prompt.text == (
        "<image>Question: q0? Answer: a0<|endofchunk|>"
        "<image>Question: q1? Answer: a1<|endofchunk|>"
        "<image>Question: q2? Answer: a2<|endofchunk|>"
        "<image>Question: q3? Answer: a3<|endofchunk|>"
        "<image>Question: q9? Answer:"
    )
    assert prompt.media == ("img0.jpg", "img1.jpg", "img2.jpg", "img3.jpg", "img9.jpg")


def test_zero_shot_uses_two_text_only_examples() -> None:
    indices, text_only = sample_support(pool_size=10, shots=0, rng=random.Random(0))
    assert len(indices) == 2 and text_only
    caption = PromptTemplate(CAPTION_TEMPLATE)
    support = [Example(id=str(i), media=(f"s{i}.jpg",), answer=f"cap {i}.") for i in indices]
    query = Example(id="q", media=("q.jpg",))
    prompt = build_prompt(caption, query, support, text_only_support=True)
    assert (
        prompt.text == f"Output: cap {indices[0]}.<|endofchunk|>Output: cap {indices[1]}.<|endofchunk|><image>Output:"
    )
    assert prompt.media == ("q.jpg",)  # only the query's image


def test_close_ended_continuation_reassembles_the_example() -> None:
    template = PromptTemplate(HATEFUL_MEMES_TEMPLATE)
    ex = Example(id="m", media=("m.png",), fields={"text": "hello"}, answer="yes")
    assert template.query(ex) + template.continuation("yes", ex) == template.render(ex)
    assert template.continuation("no", ex) == " no<|endofchunk|>"


def test_template_labels_are_its_field_labels() -> None:
    assert VQA.labels == ("Question:", "Answer:")
    assert PromptTemplate(CAPTION_TEMPLATE).labels == ("Output:",)


def test_sampling_is_seeded_and_respects_exclusions() -> None:
    a, _ = sample_support(20, 4, random.Random(3))
    b, _ = sample_support(20, 4, random.Random(3))
    assert a == b and len(set(a)) == 4
    c, text_only = sample_support(6, 4, random.Random(0), exclude={0, 1})
    assert set(c) == {2, 3, 4, 5} and not text_only
    with pytest.raises(ValueError, match="only 4 usable"):
        sample_support(6, 5, random.Random(0), exclude={0, 1})


def test_template_validation() -> None:
    with pytest.raises(ValueError, match="answer"):
        PromptTemplate("<image>no slot")
    with pytest.raises(ValueError, match="<image>"):
        PromptTemplate("Output: {answer}")


def test_rices_most_similar_last() -> None:
    support = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7], [0.9, 0.1], [-1.0, 0.0]])
    query = torch.tensor([[1.0, 0.05]])
    rices = Rices(support, query)
    assert rices.select(0, 3) == [2, 3, 0]  # ascending cosine similarity: the closest is last
    assert rices.select(0, 2, exclude={0}) == [2, 3]
    # Cosine, not dot product: scaling a support vector does not change its rank.
    assert Rices(support * torch.tensor([[10.0], [1], [1], [1], [1]]), query).select(0, 3) == [2, 3, 0]
    prompt = build_prompt(VQA, qa(9), [qa(i) for i in rices.select(0, 2)])
    assert prompt.media[-2:] == ("img0.jpg", "img9.jpg")  # most similar right before the query


def test_feature_cache_round_trip(tmp_path) -> None:
    cache = RicesFeatureStore(tmp_path, "abc")
    cache["k"] = torch.arange(3.0)
    cache.save()
    reloaded = RicesFeatureStore(tmp_path, "abc")
    assert "k" in reloaded and torch.equal(reloaded["k"], torch.arange(3.0))
    assert "k" not in RicesFeatureStore(tmp_path, "other-encoder")


def test_support_order_is_a_lazy_permutation() -> None:
    from itertools import islice

    from flamingo_vlm.evaluate.prompting import support_order

    assert sorted(support_order(50, random.Random(1))) == list(range(50))
    assert list(islice(support_order(10**9, random.Random(2)), 4)) == list(
        islice(support_order(10**9, random.Random(2)), 4)
    )
    # the first usable ones in one order: knowing an unusable example in advance changes nothing
    order = list(support_order(8, random.Random(5)))
    first_three = [i for i in order if i != order[0]][:3]
    assert sample_support(8, 3, random.Random(5), exclude={order[0]})[0] == first_three
