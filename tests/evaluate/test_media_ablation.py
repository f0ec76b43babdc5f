"""The media ablations: *blank* zeroes every image; *shuffle* shows each query another query's media.

A recording model stands in for Flamingo and keeps every row's real media slots exactly as the runner
passed them, so the tests compare what the model saw with the media files each prediction row names:
support examples by ``support_ids``, the query by ``media_from``.
"""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from transformers import AutoTokenizer

from flamingo_vlm.evaluate.media_loading import load_media
from flamingo_vlm.evaluate.runner import EvalConfig, Evaluator, derangement
from flamingo_vlm.evaluate.tasks import get_task
from flamingo_vlm.processing import FlamingoProcessor


class RecordingModel(nn.Module):
    """Answers "red" (or ranks the first candidate first) and records each row's real media slots in order."""

    def __init__(self, tokenizer) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.eoc_token_id = tokenizer.convert_tokens_to_ids("<|endofchunk|>")
        self.anchor = nn.Parameter(torch.zeros(1))  # the runner reads the device off the parameters
        self.seen: list[list[torch.Tensor]] = []  # per row: (t, c, h, w) per real media slot

    def _record(self, pixel_values: torch.Tensor, media_mask: torch.Tensor) -> None:
        self.seen += [list(pixels[mask]) for pixels, mask in zip(pixel_values, media_mask)]

    def generate(self, input_ids, attention_mask, pixel_values, media_mask, **kwargs):
        self._record(pixel_values, media_mask)
        answer = self.tokenizer(" red", add_special_tokens=False).input_ids + [self.eoc_token_id]
        return torch.cat([input_ids, torch.tensor(answer).expand(len(input_ids), -1)], dim=1)

    def score(self, input_ids, attention_mask, pixel_values, media_mask, candidates):
        self._record(pixel_values, media_mask)
        scores = -torch.arange(max(map(len, candidates)), dtype=torch.float).expand(len(candidates), -1)
        return SimpleNamespace(sum_logprobs=scores, mean_logprobs=scores)


@pytest.fixture
def processor(tokenizer_dir) -> FlamingoProcessor:
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    return FlamingoProcessor(tok, image_size=16, image_mean=(0, 0, 0), image_std=(1, 1, 1), max_frames=4)


def evaluate(task: str, root, processor: FlamingoProcessor, ablation: str, shots=(0, 2), trials=2):
    """The result, and each prediction row with the media slots the model saw for it."""
    model = RecordingModel(processor.tokenizer)
    config = EvalConfig(shots=shots, trials=trials, batch_size=3, media_ablation=ablation, progress=False)
    result, rows = Evaluator(model, processor, config).evaluate(get_task(task), root)
    # Rows are written, and the model called, query by query in the same order (one prompt per query).
    assert len(model.seen) == len(rows)
    return result, list(zip(rows, model.seen))


def media_tensors(task: str, root, processor: FlamingoProcessor) -> tuple[dict, dict]:
    """Each eval example's and each support example's media by id, decoded as the runner decodes them."""
    spec = get_task(task)
    queries = spec.reader(root, spec.eval_split).examples
    if spec.episodic:
        support = [s for q in queries for s in q.support]
    else:
        support = spec.reader(root, spec.support_split).examples

    def tensors(examples):
        return {
            e.id: [processor.transform_media(load_media(m, spec.media, processor)) for m in e.media] for e in examples
        }

    return tensors(queries), tensors(support)


def same(seen: torch.Tensor, expected: torch.Tensor) -> bool:
    """Equal up to frame padding (the processor repeats a short video's last frame)."""
    return torch.equal(seen[: len(expected)], expected)


@pytest.mark.parametrize("task", ["vqav2", "hateful_memes", "msrvttqa", "shapesworld_attribute", "shapesworld_binding"])
def test_shuffle_swaps_only_the_query_media_for_another_querys(task, processor, benchmark_writer) -> None:
    root = benchmark_writer(task, n_train=6, n_eval=4)
    result, seen_rows = evaluate(task, root, processor, "shuffle")
    assert result["media_ablation"] == "shuffle" and result["num_evaluated"] == 4

    donors = {row["id"]: row["media_from"] for row, _ in seen_rows}
    assert all(row["media_from"] == donors[row["id"]] for row, _ in seen_rows)  # one swap for every shot and trial
    assert sorted(donors.values()) == sorted(donors) and all(k != v for k, v in donors.items())  # a derangement

    query_media, support_media = media_tensors(task, root, processor)
    for row, slots in seen_rows:
        shown_support = row["support_ids"] if row["shots"] > 0 else []  # 0-shot support is text-only
        assert len(slots) == len(shown_support) + 1
        assert all(same(slot, support_media[i][0]) for slot, i in zip(slots, shown_support))  # their own images
        assert same(slots[-1], query_media[row["media_from"]][0])
        assert not same(slots[-1], query_media[row["id"]][0])

    _, again = evaluate(task, root, processor, "shuffle")
    assert [row["media_from"] for row, _ in again] == [row["media_from"] for row, _ in seen_rows]  # deterministic


def test_blank_zeroes_every_image_and_none_shows_the_query_its_own(processor, benchmark_writer) -> None:
    root = benchmark_writer("vqav2", n_train=6, n_eval=4)
    query_media, _ = media_tensors("vqav2", root, processor)

    result, seen_rows = evaluate("vqav2", root, processor, "none")
    assert result["media_ablation"] == "none"
    assert all(same(slots[-1], query_media[row["id"]][0]) for row, slots in seen_rows)

    result, seen_rows = evaluate("vqav2", root, processor, "blank")
    assert result["media_ablation"] == "blank" and all("media_from" not in row for row, _ in seen_rows)
    slots = [slot for _, row_slots in seen_rows for slot in row_slots]
    assert len(slots) > len(seen_rows)  # support images were blanked too, not only the queries
    assert all(not slot.any() for slot in slots)


def test_shuffle_needs_two_queries(processor, benchmark_writer) -> None:
    root = benchmark_writer("vqav2", n_train=6, n_eval=1)
    with pytest.raises(ValueError, match=r"vqav2: media_ablation='shuffle' .* needs at least 2 .* got 1 of 1"):
        evaluate("vqav2", root, processor, "shuffle")


def test_an_undecodable_query_is_counted_once_and_never_shown_in_anothers_place(processor, benchmark_writer) -> None:
    root = benchmark_writer("vqav2", n_train=6, n_eval=4)
    (root / "val2014" / "COCO_val2014_000000001001.jpg").write_bytes(b"not an image")
    plain, plain_rows = evaluate("vqav2", root, processor, "none")
    result, seen_rows = evaluate("vqav2", root, processor, "shuffle")

    assert result["bad_inputs"] == plain["bad_inputs"] == {"eval": {"undecodable_media": 1}, "support": {}}
    assert result["num_evaluated"] == plain["num_evaluated"] == 3
    assert [row["id"] for row, _ in seen_rows] == [row["id"] for row, _ in plain_rows]  # the same queries scored
    donors = {row["id"]: row["media_from"] for row, _ in seen_rows}
    assert len(donors) == 3 and sorted(donors.values()) == sorted(donors) and all(k != v for k, v in donors.items())


def test_derangement_moves_everything_and_is_seeded() -> None:
    for n in range(2, 8):
        for seed in range(20):
            order = derangement(n, random.Random(seed))
            assert sorted(order) == list(range(n)) and all(i != j for i, j in enumerate(order))
            assert order == derangement(n, random.Random(seed))
    assert len({tuple(derangement(4, random.Random(seed))) for seed in range(50)}) == 9  # all of !4, not one shift
    with pytest.raises(ValueError, match="at least 2"):
        derangement(1, random.Random(0))


@pytest.mark.parametrize(
    ("flags", "expected"), [([], "none"), (["--blind"], "blank"), (["--media-ablation", "shuffle"], "shuffle")]
)
def test_cli_media_ablation(flags, expected) -> None:
    from flamingo_vlm.cli import build_parser
    from flamingo_vlm.recipes.evaluate import config_from_args

    args = build_parser().parse_args(["eval", "--model", "m", "--task", "vqav2", "--data-root", "d", *flags])
    assert config_from_args(args).eval.media_ablation == expected
