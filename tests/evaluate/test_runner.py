"""The runner's plumbing, with an oracle standing in for Flamingo (same ``generate``/``score`` contract).

The oracle reads the colour of each row's *last* media (the query) from ``pixel_values`` and answers
it, so perfect scores prove that prompts, media order, padding, candidates and metrics line up.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from transformers import AutoTokenizer

from flamingo_vlm.evaluate.report import markdown_table, write_results
from flamingo_vlm.evaluate.runner import EvalConfig, Evaluator
from flamingo_vlm.evaluate.tasks import get_task
from flamingo_vlm.processing import FlamingoProcessor

ANSWERS = {
    "vqav2": lambda c: c,
    "coco": lambda c: f"A {c} square.",
    "msrvttqa": lambda c: c,
    "imagenet": lambda c: f"{c} thing",
    "hateful_memes": lambda c: "yes" if c in ("green", "yellow") else "no",
}


@dataclass
class ScoreOutput:
    sum_logprobs: torch.Tensor
    mean_logprobs: torch.Tensor


class ColourVision(nn.Module):
    """(N, c, h, w) -> (N, 1, 3): the mean colour, a feature RICES can compare."""

    image_size, image_mean, image_std, num_channels = 16, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), 3

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Parameter(torch.eye(3))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels.mean(dim=(2, 3)) @ self.proj).unsqueeze(1)  # (N, 1, 3)


class OracleFlamingo(nn.Module):
    def __init__(self, tokenizer, answer_for, colours: dict[str, tuple[int, int, int]]) -> None:
        super().__init__()
        self.colours = colours
        self.vision = ColourVision()
        self.tokenizer = tokenizer
        self.config = SimpleNamespace(max_frames=4)
        self.answer_for = answer_for
        self.eoc_token_id = tokenizer.convert_tokens_to_ids("<|endofchunk|>")

    def _query_colours(self, pixel_values, media_mask) -> list[str]:
        last = media_mask.sum(dim=1) - 1  # (b,)
        rgb = pixel_values[torch.arange(len(last)), last, 0].mean(dim=(-1, -2)) * 255  # (b, c)
        names = list(self.colours)
        table = torch.tensor([self.colours[n] for n in names], dtype=torch.float)  # (k, 3)
        return [names[int(torch.cdist(row[None], table).argmin())] for row in rgb]

    run_on = ""  # text written after the answer, before <|endofchunk|>

    def generate(
        self,
        input_ids,
        attention_mask,
        pixel_values,
        media_mask,
        max_new_tokens=20,
        num_beams=3,
        eos_token_id=None,
        stop_strings=None,
    ):
        assert eos_token_id == [self.eoc_token_id] + [self.tokenizer.eos_token_id] * (
            self.tokenizer.eos_token_id is not None
        )
        answers = [self.answer_for(c) + self.run_on for c in self._query_colours(pixel_values, media_mask)]
        new = [self.tokenizer(" " + a, add_special_tokens=False).input_ids + [self.eoc_token_id] for a in answers]
        width = max(map(len, new))
        new = torch.tensor([ids + [self.eoc_token_id] * (width - len(ids)) for ids in new])
        return torch.cat([input_ids, new], dim=1)

    def score(self, input_ids, attention_mask, pixel_values, media_mask, candidates):
        colours = self._query_colours(pixel_values, media_mask)
        width = max(map(len, candidates))
        scores = torch.full((len(candidates), width), -5.0)
        for row, (colour, cands) in enumerate(zip(colours, candidates)):
            for j, ids in enumerate(cands):
                text = self.tokenizer.decode(ids).replace("<|endofchunk|>", "").strip()
                scores[row, j] = 0.0 if text == self.answer_for(colour) else -3.0 - j
        return ScoreOutput(scores, scores)


@pytest.fixture
def oracle(tokenizer_dir, fixture_colours):
    def make(task: str):
        tok = AutoTokenizer.from_pretrained(tokenizer_dir)
        proc = FlamingoProcessor(tok, image_size=16, image_mean=(0, 0, 0), image_std=(1, 1, 1), max_frames=4)
        return OracleFlamingo(proc.tokenizer, ANSWERS[task], fixture_colours), proc

    return make


@pytest.mark.parametrize(
    ("task", "metric", "expected"),
    [
        ("vqav2", "vqa_accuracy", 100.0),
        ("msrvttqa", "top1", 100.0),
        ("imagenet", "top1", 100.0),
        ("hateful_memes", "roc_auc", 100.0),
        ("coco", "bleu4", None),
    ],
)
def test_oracle_scores_perfectly(task, metric, expected, oracle, benchmark_writer, tmp_path) -> None:
    model, proc = oracle(task)
    root = benchmark_writer(task, n_train=6, n_eval=4)
    config = EvalConfig(
        shots=(0, 2), trials=2, batch_size=3, ensembles=2, progress=False, cache_dir=str(tmp_path / "c")
    )
    result, rows = Evaluator(model, proc, config).evaluate(get_task(task), root)
    assert set(result["shots"]) == {"0", "2"}
    for summary in result["shots"].values():
        assert len(summary["trials"]) == 2
        if expected is not None:
            assert summary["mean"][metric] == pytest.approx(expected)
            assert summary["std"][metric] == pytest.approx(0.0)
        else:
            assert summary["mean"][metric] > 0
    assert len(rows) == 2 * 2 * 4  # shots x trials x examples
    assert {len(r["support_ids"]) for r in rows if r["shots"] == 2} == {2}
    assert {len(r["support_ids"]) for r in rows if r["shots"] == 0} == {2}  # the text-only pair


@pytest.mark.parametrize("run_on", [" Question: What colour is it?", " Answer: no", "\nnext line"])
def test_generation_ends_at_the_next_label(run_on, oracle, benchmark_writer) -> None:
    """Pages that ask several questions per image teach a model to go on with ``Question:``."""
    model, proc = oracle("vqav2")
    model.run_on = run_on
    root = benchmark_writer("vqav2", n_train=6, n_eval=4)
    result, rows = Evaluator(model, proc, EvalConfig(shots=(2,), trials=1, progress=False)).evaluate(
        get_task("vqav2"), root
    )
    assert result["shots"]["2"]["mean"]["vqa_accuracy"] == pytest.approx(100.0)
    assert all(r["prediction"] in model.colours for r in rows)


def test_rices_puts_the_most_similar_support_last(oracle, benchmark_writer, tmp_path) -> None:
    model, proc = oracle("imagenet")
    root = benchmark_writer("imagenet", n_train=9, n_eval=3)
    config = EvalConfig(shots=(2,), trials=1, rices=True, progress=False, cache_dir=str(tmp_path / "cache"))
    _, rows = Evaluator(model, proc, config).evaluate(get_task("imagenet"), root)
    for row in rows:  # ids are "<class dir>/<file>": 3 same-class images exist per query
        assert all(s.split("/")[0] == row["id"].split("/")[0] for s in row["support_ids"])
    assert list((tmp_path / "cache").glob("rices-*.safetensors"))  # features were cached


def test_bad_inputs_are_reported(oracle, benchmark_writer, tmp_path) -> None:
    model, proc = oracle("vqav2")
    root = benchmark_writer("vqav2", n_train=6, n_eval=4)
    (root / "val2014" / "COCO_val2014_000000001000.jpg").unlink()  # missing
    (root / "val2014" / "COCO_val2014_000000001001.jpg").write_bytes(b"not an image")  # undecodable
    (root / "train2014" / "COCO_train2014_000000000000.jpg").write_bytes(b"broken support")
    config = EvalConfig(shots=(4,), trials=2, progress=False)
    result, rows = Evaluator(model, proc, config).evaluate(get_task("vqav2"), root)
    assert result["bad_inputs"] == {
        "eval": {"missing_media": 1, "undecodable_media": 1},
        "support": {"undecodable_media": 1},
    }
    assert (result["num_eval_records"], result["num_queries"], result["num_evaluated"]) == (4, 3, 2)
    assert result["shots"]["4"]["mean"]["vqa_accuracy"] == pytest.approx(100.0)
    assert all("0" not in r["support_ids"] for r in rows if r["seed"] == 1)  # never reused once broken

    path = write_results(tmp_path / "out", {"tasks": {"vqav2": result}}, rows)
    assert json.loads(path.read_text())["tasks"]["vqav2"]["shots"]["4"]["trials"][0]["seed"] == 0
    assert len((tmp_path / "out" / "predictions.jsonl").read_text().splitlines()) == len(rows)
    table = markdown_table([result])
    assert "| vqav2 | vqa_accuracy | 100.00 ± 0.00 |" in table and "missing_media=1" in table


def test_vqa_normalization_reaches_the_scorer(tokenizer_dir, fixture_colours, benchmark_writer) -> None:
    """TextVQA's 10 answers agree, so the official rule leaves "Red." unnormalised; normalize_both does not."""
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    proc = FlamingoProcessor(tok, image_size=16, image_mean=(0, 0, 0), image_std=(1, 1, 1), max_frames=4)
    model = OracleFlamingo(proc.tokenizer, lambda c: c.capitalize() + ".", fixture_colours)
    root = benchmark_writer("textvqa", n_train=4, n_eval=3)
    scores = {}
    for normalization in ("official", "normalize_both"):
        config = EvalConfig(shots=(0,), trials=1, progress=False, vqa_normalization=normalization)
        result, _ = Evaluator(model, proc, config).evaluate(get_task("textvqa"), root)
        scores[normalization] = result["shots"]["0"]["mean"]["vqa_accuracy"]
    assert scores == {"official": 0.0, "normalize_both": pytest.approx(100.0)}
    with pytest.raises(ValueError, match="vqa_normalization"):
        EvalConfig(vqa_normalization="lenient")


def test_shards_merge_to_the_single_process_result(oracle, benchmark_writer, tmp_path) -> None:
    """Two shards of one log, predicted one after the other in this process, score as one unsharded run: each
    query's support comes from its own RNG, whatever the other shard found broken (support image 3 is)."""
    from flamingo_vlm.evaluate.prediction_log import PredictionLog, Shard

    model, proc = oracle("vqav2")
    root = benchmark_writer("vqav2", n_train=6, n_eval=7)
    (root / "train2014" / "COCO_train2014_000000000003.jpg").write_bytes(b"broken support")
    config = EvalConfig(shots=(0, 3), trials=2, batch_size=2, progress=False)
    expected = Evaluator(model, proc, config).evaluate(get_task("vqav2"), root)
    assert expected[0]["bad_inputs"]["support"] == {"undecodable_media": 1}

    logs = [PredictionLog(tmp_path / "logs", {"run": 1}, Shard(rank, 2)) for rank in (0, 1)]
    for log in logs:
        log.prepare(overwrite=False)
        log.open()
    assert Evaluator(model, proc, config).evaluate(get_task("vqav2"), root, logs[1]) is None  # not rank 0
    assert Evaluator(model, proc, config).evaluate(get_task("vqav2"), root, logs[0]) == expected
    shares = [len((tmp_path / "logs" / f"rank-{r}.jsonl").read_text().splitlines()) for r in (0, 1)]
    assert shares == [2 * 2 * 4, 2 * 2 * 3]  # batches {0,1}, {4,5} / {2,3}, {6}: units x queries
