"""The few-shot evaluation loop: for each shot count and seeded trial, prompt, predict, score.

One :class:`Evaluator` holds the loaded model and processor, so any number of tasks share them.
Open-ended tasks generate with beam search and stop at ``<|endofchunk|>``; close-ended tasks rank
their candidates by log-likelihood, optionally averaged over several orderings of the support
examples (prompt ensembling).  Records that cannot be used are counted per split and reason, and
reported next to the metrics, so a number is never computed over a silently smaller set.

Two media ablations give baselines for the same prompts: *blank* zeroes every image (what text alone
can answer, but a blanked image is also an input the model never saw), and *shuffle* shows each query
another query's image (support examples keep theirs), which tells using the image's content apart from
reacting to an odd input.
"""

from __future__ import annotations

import logging
import random
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from tqdm.auto import tqdm

from flamingo_vlm.evaluate.media_loading import MediaError, load_media
from flamingo_vlm.evaluate.metrics.vqa import VQA_NORMALIZATIONS, VqaNormalization
from flamingo_vlm.evaluate.prompting import Prompt, PromptTemplate, build_prompt, sample_support
from flamingo_vlm.evaluate.rices import Rices, RicesFeatureStore, pooled_features
from flamingo_vlm.evaluate.tasks.base import Example, Prediction, Split, TaskSpec
from flamingo_vlm.model.generation import default_stop_ids
from flamingo_vlm.model.vision import encoder_fingerprint
from flamingo_vlm.processing import FlamingoProcessor

logger = logging.getLogger(__name__)

MediaAblation = Literal["none", "blank", "shuffle"]
MEDIA_ABLATIONS: tuple[str, ...] = get_args(MediaAblation)


@dataclass
class EvalConfig:
    """How to evaluate; the same for every task of a run (per-task overrides are keyed by task name)."""

    shots: tuple[int, ...] = (0, 4, 8, 16, 32)
    trials: int = 3
    seed: int = 0
    rices: bool = False
    ensembles: int = 1  # support orderings averaged per query (close-ended tasks only)
    batch_size: int = 8
    num_beams: int = 3
    max_examples: int | None = None  # the first N eval examples; None = the whole split
    templates: dict[str, str] = field(default_factory=dict)
    eval_split: str | None = None
    support_split: str | None = None
    cache_dir: str = ".cache/flamingo_rices"
    progress: bool = True
    media_ablation: MediaAblation = "none"  # "blank": every image zeroed; "shuffle": queries swap images
    # VQA-family accuracy: "official" = vqaEval.py exactly (published numbers); "normalize_both" always
    # normalises prediction and human answers (raw-answer sets such as ShapesWorld's).
    vqa_normalization: VqaNormalization = "official"

    def __post_init__(self) -> None:
        self.shots = tuple(self.shots)
        if not self.shots or min(self.shots) < 0:
            raise ValueError(f"shots must be non-negative integers, got {self.shots}")
        if self.trials < 1 or self.ensembles < 1 or self.batch_size < 1 or self.num_beams < 1:
            raise ValueError("trials, ensembles, batch_size and num_beams must all be >= 1")
        if self.media_ablation not in MEDIA_ABLATIONS:
            raise ValueError(f"media_ablation must be one of {MEDIA_ABLATIONS}, got {self.media_ablation!r}")
        if self.vqa_normalization not in VQA_NORMALIZATIONS:
            raise ValueError(f"vqa_normalization must be one of {VQA_NORMALIZATIONS}, got {self.vqa_normalization!r}")


@dataclass
class _Query:
    """One eval example, its prompt(s) (several when ensembling) and each prompt's decoded media."""

    index: int
    example: Example
    support_ids: list[str]
    prompts: list[Prompt]
    media: list[list[Any]]


@dataclass
class _TaskRun:
    """The state of one task's evaluation: its data, and the media found undecodable so far.

    ``donors`` maps a query's index to the query whose media it shows (the shuffle ablation only).
    """

    spec: TaskSpec
    template: PromptTemplate
    eval_split: Split
    support: Split
    queries: list[Example]
    rices: Rices | None = None
    broken_support: set[int] = field(default_factory=set)
    broken_queries: set[int] = field(default_factory=set)
    donors: dict[int, int] = field(default_factory=dict)


class Evaluator:
    """Runs tasks against one model; ``evaluate`` returns the task's results and its prediction rows."""

    def __init__(self, model: torch.nn.Module, processor: FlamingoProcessor, config: EvalConfig) -> None:
        self.model = model.eval()
        self.processor = processor
        self.config = config
        self.device = next(model.parameters()).device

    def evaluate(self, spec: TaskSpec, data_root: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        cfg = self.config
        spec.check_shots(cfg.shots)
        root = Path(data_root)
        eval_name, support_name = cfg.eval_split or spec.eval_split, cfg.support_split or spec.support_split
        eval_split, support = spec.reader(root, eval_name), spec.reader(root, support_name)
        queries = eval_split.examples[: cfg.max_examples]
        if not queries:
            raise ValueError(f"{spec.name}: no usable examples in split {eval_name!r} under {root}")
        run = _TaskRun(spec, PromptTemplate(cfg.templates.get(spec.name, spec.template)), eval_split, support, queries)
        if cfg.rices:
            self._init_rices(run)
        if cfg.media_ablation == "shuffle":
            self._init_shuffle(run)

        scorer = partial(spec.scorer, normalization=cfg.vqa_normalization) if spec.vqa_scoring else spec.scorer
        shot_results, rows = {}, []
        for shots in cfg.shots:
            trials = []
            for trial in range(cfg.trials):
                seed = cfg.seed + trial
                rng = random.Random(f"{spec.name}/{shots}/{seed}")
                predictions = self._predict(run, shots, rng, desc=f"{spec.name} {shots}-shot #{trial}")
                kept = [(i, p) for i, p in enumerate(predictions) if p is not None]
                if not kept:
                    raise ValueError(f"{spec.name}: no eval example could be decoded")
                examples, preds = zip(*((queries[i], p) for i, (p, _) in kept))
                trials.append({"seed": seed, "metrics": scorer(examples, preds, eval_split.candidates or [])})
                rows += [_prediction_row(run, shots, seed, i, p, ids) for i, (p, ids) in kept]
            shot_results[str(shots)] = _summarise(trials)

        bad_eval = eval_split.bad + Counter(undecodable_media=len(run.broken_queries))
        bad_support = support.bad + Counter(undecodable_media=len(run.broken_support))
        result = {
            "task": spec.name,
            "data_root": str(root),
            "eval_split": eval_name,
            "support_split": support_name,
            "template": run.template.template,
            "mode": spec.mode,
            "media_ablation": cfg.media_ablation,
            "num_eval_records": eval_split.num_records,
            "num_queries": len(queries),
            "num_evaluated": len(queries) - len(run.broken_queries),
            "bad_inputs": {"eval": dict(bad_eval), "support": dict(bad_support)},
            "shots": shot_results,
        }
        return result, rows

    # ------------------------------------------------------------------ prompting

    def _init_rices(self, run: _TaskRun) -> None:
        cache = RicesFeatureStore(self.config.cache_dir, encoder_fingerprint(self.model.vision))
        args = (self.model.vision, self.processor, run.spec.media, cache, self.config.batch_size)
        support_features, failed_support = pooled_features([e.media[0] for e in run.support.examples], *args)
        query_features, failed_queries = pooled_features([e.media[0] for e in run.queries], *args)
        run.rices = Rices(support_features, query_features)
        run.broken_support |= failed_support
        run.broken_queries |= failed_queries

    def _init_shuffle(self, run: _TaskRun) -> None:
        """Fix which query's media each query shows: one derangement for every shot count and trial.

        It is drawn over the queries whose own media decodes (decoded once here to find them), so the
        shuffled run scores exactly the queries the plain run scores, every one of them shows a real
        image, and an undecodable query is counted once, as itself, never as someone's donor.
        """
        for i, query in enumerate(run.queries):
            if i in run.broken_queries:
                continue
            try:
                self._load(run, query)
            except MediaError as err:
                logger.warning("%s: %s", run.spec.name, err)
                run.broken_queries.add(i)
        usable = [i for i in range(len(run.queries)) if i not in run.broken_queries]
        if len(usable) < 2:
            raise ValueError(
                f"{run.spec.name}: media_ablation='shuffle' swaps media between eval queries and "
                f"needs at least 2 with decodable media, got {len(usable)} of {len(run.queries)}"
            )
        order = derangement(len(usable), random.Random(f"{run.spec.name}/shuffle/{self.config.seed}"))
        run.donors = {usable[i]: usable[j] for i, j in enumerate(order)}

    def _load(self, run: _TaskRun, example: Example) -> list[Any]:
        return [load_media(m, run.spec.media, self.processor) for m in example.media]

    def _choose_support(self, run: _TaskRun, index: int, shots: int, rng: random.Random) -> tuple[list[int], bool]:
        if run.rices is not None and shots > 0:
            return run.rices.select(index, shots, exclude=run.broken_support), False
        return sample_support(len(run.support.examples), shots, rng, exclude=run.broken_support)

    def _make_query(self, run: _TaskRun, index: int, shots: int, rng: random.Random) -> _Query | None:
        """Prompt(s) for eval example ``index`` with decoded media; None when its own media is undecodable.

        Under the shuffle ablation the query shows its donor's media, decoded the same way (the donors were
        checked to decode). An undecodable support example is excluded for the rest of the run and the choice
        redone.
        """
        query = run.queries[index]
        try:
            query_media = self._load(run, run.queries[run.donors.get(index, index)])  # another's when shuffled
            if run.spec.episodic:
                support, text_only = self._episode_support(run, query, shots, rng)
            else:
                support, text_only = self._pool_support(run, index, shots, rng)
        except MediaError as err:
            logger.warning("%s: %s", run.spec.name, err)
            run.broken_queries.add(index)
            return None
        orders = [list(range(len(support)))]
        if run.spec.mode == "rank" and not text_only:
            orders += [rng.sample(orders[0], len(support)) for _ in range(self.config.ensembles - 1)]
        prompts = [build_prompt(run.template, query, [support[i][0] for i in order], text_only) for order in orders]
        media = [[m for i in ([] if text_only else order) for m in support[i][1]] + query_media for order in orders]
        return _Query(index, query, [example.id for example, _ in support], prompts, media)

    def _pool_support(self, run: _TaskRun, index: int, shots: int, rng: random.Random):
        """Support drawn from the task's support split, with their decoded media."""
        while True:
            chosen, text_only = self._choose_support(run, index, shots, rng)
            support = []
            for i in chosen:
                example = run.support.examples[i]
                try:
                    support.append((example, [] if text_only else self._load(run, example)))
                except MediaError as err:
                    logger.warning("%s (support): %s", run.spec.name, err)
                    run.broken_support.add(i)
            if len(support) == len(chosen):
                return support, text_only

    def _episode_support(self, run: _TaskRun, query: Example, shots: int, rng: random.Random):
        """The episode's own first ``shots`` support examples, in a per-trial order; 0 shots: none."""
        if len(query.support) < shots:
            raise ValueError(
                f"{run.spec.name}: episode {query.id} has {len(query.support)} support examples, "
                f"fewer than {shots} shots"
            )
        chosen = rng.sample(query.support[:shots], shots)
        return [(example, self._load(run, example)) for example in chosen], False

    # ------------------------------------------------------------------ model calls

    @torch.inference_mode()
    def _predict(
        self, run: _TaskRun, shots: int, rng: random.Random, desc: str
    ) -> list[tuple[Prediction, list[str]] | None]:
        """Each query's prediction and the ids of its support examples (None: undecodable query)."""
        predictions: list[tuple[Prediction, list[str]] | None] = [None] * len(run.queries)
        bs = self.config.batch_size
        for start in tqdm(range(0, len(run.queries), bs), desc=desc, disable=not self.config.progress, leave=False):
            indices = [i for i in range(start, min(start + bs, len(run.queries))) if i not in run.broken_queries]
            batch = [q for i in indices if (q := self._make_query(run, i, shots, rng)) is not None]
            if not batch:
                continue
            outputs = self._generate(run, batch) if run.spec.mode == "generate" else self._rank(run, batch)
            for q, out in zip(batch, outputs):
                predictions[q.index] = (out, q.support_ids)
        return predictions

    def _inputs(self, prompts: Sequence[Prompt], media: Sequence[list[Any]]) -> dict[str, torch.Tensor]:
        batch = self.processor([p.text for p in prompts], images=list(media), padding_side="left")
        if self.config.media_ablation == "blank":
            batch["pixel_values"] = torch.zeros_like(batch["pixel_values"])  # the mean colour everywhere
        return {k: v.to(self.device) for k, v in batch.items()}

    def _generate(self, run: _TaskRun, batch: Sequence[_Query]) -> list[Prediction]:
        """Beam search up to ``<|endofchunk|>``, or to the template's next label (a new ``Question:``)."""
        inputs = self._inputs([q.prompts[0] for q in batch], [q.media[0] for q in batch])
        out = self.model.generate(
            **inputs,
            max_new_tokens=run.spec.max_new_tokens,
            num_beams=self.config.num_beams,
            eos_token_id=default_stop_ids(self.model),
            stop_strings=[*run.template.labels, "\n"],
        )
        texts = self.processor.batch_decode(
            out, prompt_length=inputs["input_ids"].shape[1], stop_labels=run.template.labels
        )
        return [Prediction(text) for text in texts]

    def _rank(self, run: _TaskRun, batch: Sequence[_Query]) -> list[Prediction]:
        """Sum log-likelihood of every candidate, averaged over each query's support orderings."""
        per_query = [list(q.example.candidates) or run.eval_split.candidates for q in batch]
        if not all(per_query):
            raise ValueError(f"{run.spec.name}: a close-ended task needs candidates")
        prompts = [p for q in batch for p in q.prompts]
        media = [m for q in batch for m in q.media]
        texts = [
            [run.template.continuation(c, q.example) for c in cands]
            for q, cands in zip(batch, per_query)
            for _ in q.prompts
        ]
        inputs = self._inputs(prompts, media)
        scores = self.model.score(**inputs, candidates=self.processor.tokenize_candidates(texts)).sum_logprobs
        out = []
        for rows, cands in zip(scores.float().cpu().split([len(q.prompts) for q in batch]), per_query):
            mean = rows[:, : len(cands)].mean(dim=0)  # (num_candidates,)
            out.append(Prediction(cands[int(mean.argmax())], tuple(mean.tolist())))
        return out


def derangement(n: int, rng: random.Random) -> list[int]:
    """A uniformly random permutation of ``range(n)`` that moves every index (rejection: about e draws)."""
    if n < 2:
        raise ValueError(f"a derangement needs at least 2 items, got {n}")
    while True:
        order = rng.sample(range(n), n)
        if all(i != j for i, j in enumerate(order)):
            return order


def _prediction_row(
    run: _TaskRun, shots: int, seed: int, index: int, pred: Prediction, support_ids: list[str]
) -> dict[str, Any]:
    """One line of ``predictions.jsonl``; under the shuffle ablation ``media_from`` names whose media was shown."""
    example = run.queries[index]
    row = {
        "task": run.spec.name,
        "shots": shots,
        "seed": seed,
        "id": example.id,
        "prediction": pred.text,
        "references": list(example.references),
        "support_ids": support_ids,
    }
    if run.donors:
        row["media_from"] = run.queries[run.donors[index]].id
    candidates = list(example.candidates) or run.eval_split.candidates
    if pred.candidate_logprobs is not None and candidates:
        ranked = sorted(range(len(candidates)), key=lambda i: -pred.candidate_logprobs[i])[:5]
        row["top5"] = [[candidates[i], pred.candidate_logprobs[i]] for i in ranked]
    return row


def _summarise(trials: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and (sample) standard deviation of each metric over the trials."""
    names = trials[0]["metrics"].keys()
    values = {n: [t["metrics"][n] for t in trials] for n in names}
    return {
        "mean": {n: statistics.fmean(v) for n, v in values.items()},
        "std": {n: statistics.stdev(v) if len(v) > 1 else 0.0 for n, v in values.items()},
        "trials": trials,
    }


def config_dict(config: EvalConfig) -> dict[str, Any]:
    d = asdict(config)
    d["shots"] = list(config.shots)
    return d
