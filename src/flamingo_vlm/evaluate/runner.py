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
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from tqdm.auto import tqdm

from flamingo_vlm.evaluate.media_loading import MediaError, load_media
from flamingo_vlm.evaluate.metrics.vqa import VQA_NORMALIZATIONS, VqaNormalization
from flamingo_vlm.evaluate.prediction_log import PredictionLog, PredictionLogError, Shard, barrier
from flamingo_vlm.evaluate.prompting import Prompt, PromptTemplate, build_prompt, support_order, support_size
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
    """One eval example, its prompt(s) (several when ensembling), each prompt's decoded media, and the support
    examples passed over as undecodable while choosing its support."""

    index: int
    example: Example
    support_ids: list[str]
    prompts: list[Prompt]
    media: list[list[Any]]
    broken_support: list[int]


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
    data_root: Path
    eval_split_name: str
    support_split_name: str
    rices: Rices | None = None
    broken_support: set[int] = field(default_factory=set)
    broken_queries: set[int] = field(default_factory=set)
    donors: dict[int, int] = field(default_factory=dict)


class Evaluator:
    """Runs tasks against one model; ``evaluate`` returns the task's results and its prediction rows.

    Every query's support examples (and ensemble orderings) come from an RNG of its own, seeded by
    ``(task, shots, seed, query index)``, so a query's prompt never depends on which queries were predicted
    before it: a run sharded over ranks, or resumed after a kill, prompts every query as one process does.
    """

    def __init__(self, model: torch.nn.Module, processor: FlamingoProcessor, config: EvalConfig) -> None:
        self.model = model.eval()
        self.processor = processor
        self.config = config
        self.device = next(model.parameters()).device

    def evaluate(
        self, spec: TaskSpec, data_root: str | Path, log: PredictionLog | None = None
    ) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
        """Predict and score one task.

        With a ``log``, this rank predicts only its shard's queries that the log does not hold yet, appending
        each prediction to the log; after every rank is done, rank 0 scores the merged log and the other
        ranks return None.
        """
        cfg = self.config
        spec.check_shots(cfg.shots)
        root = Path(data_root)
        eval_name, support_name = cfg.eval_split or spec.eval_split, cfg.support_split or spec.support_split
        eval_split, support = spec.reader(root, eval_name), spec.reader(root, support_name)
        queries = eval_split.examples[: cfg.max_examples]
        if not queries:
            raise ValueError(f"{spec.name}: no usable examples in split {eval_name!r} under {root}")
        template = PromptTemplate(cfg.templates.get(spec.name, spec.template))
        run = _TaskRun(spec, template, eval_split, support, queries, root, eval_name, support_name)
        if cfg.rices:
            self._init_rices(run)
        if cfg.media_ablation == "shuffle":
            self._init_shuffle(run)
        upfront_broken = set(run.broken_queries)  # found by every rank alike, before any prediction

        shard = log.shard if log is not None else Shard()
        done = log.records(spec.name) if log is not None else {}
        _check_logged(run, done)
        run.broken_queries |= {i for unit in done.values() for i, r in unit.items() if r.get("broken")}
        records: dict[tuple[int, int], dict[int, dict[str, Any]]] = {}
        for shots in cfg.shots:
            for trial in range(cfg.trials):
                seed = cfg.seed + trial
                desc = f"{spec.name} {shots}-shot #{trial}"
                for record in self._predict(run, shots, seed, shard, done.get((shots, seed), {}), desc):
                    records.setdefault((shots, seed), {})[record["index"]] = record
                    if log is not None:
                        log.append(record)
        if log is not None:
            barrier()  # every rank's predictions of this task are in the log
            if shard.rank != 0:
                return None
            records = log.records(spec.name)
        return self._score(run, records, upfront_broken)

    def _score(
        self, run: _TaskRun, records: dict[tuple[int, int], dict[int, dict[str, Any]]], upfront_broken: set[int]
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Metrics and prediction rows from every query's record, in query order."""
        cfg, spec, queries = self.config, run.spec, run.queries
        scorer = partial(spec.scorer, normalization=cfg.vqa_normalization) if spec.vqa_scoring else spec.scorer
        broken_queries, broken_support = set(upfront_broken), set(run.broken_support)
        shot_results, rows = {}, []
        for shots in cfg.shots:
            trials = []
            for trial in range(cfg.trials):
                seed = cfg.seed + trial
                unit = records.get((shots, seed), {})
                missing = [i for i in range(len(queries)) if i not in unit and i not in broken_queries]
                if missing:
                    raise ValueError(
                        f"{spec.name}: no prediction for {len(missing)} queries at {shots} shots, seed {seed} "
                        f"(e.g. query {missing[0]}): the prediction log is incomplete"
                    )
                broken_queries |= {i for i, r in unit.items() if r.get("broken")}
                broken_support |= {j for r in unit.values() for j in r["broken_support"]}
                kept = sorted((i, r) for i, r in unit.items() if not r.get("broken"))
                if not kept:
                    raise ValueError(f"{spec.name}: no eval example could be decoded")
                preds = [(i, _prediction(r), r["support_ids"]) for i, r in kept]
                examples, predictions = [queries[i] for i, _, _ in preds], [p for _, p, _ in preds]
                metrics = scorer(examples, predictions, run.eval_split.candidates or [])
                trials.append({"seed": seed, "metrics": metrics})
                rows += [_prediction_row(run, shots, seed, i, p, ids) for i, p, ids in preds]
            shot_results[str(shots)] = _summarise(trials)

        bad_eval = run.eval_split.bad + Counter(undecodable_media=len(broken_queries))
        bad_support = run.support.bad + Counter(undecodable_media=len(broken_support))
        result = {
            "task": spec.name,
            "data_root": str(run.data_root),
            "eval_split": run.eval_split_name,
            "support_split": run.support_split_name,
            "template": run.template.template,
            "mode": spec.mode,
            "media_ablation": cfg.media_ablation,
            "num_eval_records": run.eval_split.num_records,
            "num_queries": len(queries),
            "num_evaluated": len(queries) - len(broken_queries),
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

    def _make_query(self, run: _TaskRun, index: int, shots: int, seed: int) -> _Query:
        """Prompt(s) for eval example ``index`` with decoded media; MediaError when its own media is undecodable.

        Under the shuffle ablation the query shows its donor's media, decoded the same way (the donors were
        checked to decode). A support example found undecodable is passed over (and remembered, so no query
        decodes it again) for the next one in the query's order.
        """
        rng = random.Random(f"{run.spec.name}/{shots}/{seed}/{index}")  # this query's own: see the class doc
        query = run.queries[index]
        query_media = self._load(run, run.queries[run.donors.get(index, index)])  # another's when shuffled
        if run.spec.episodic:
            support, text_only, broken = self._episode_support(run, query, shots, rng), False, []
        else:
            support, text_only, broken = self._pool_support(run, index, shots, rng)
        orders = [list(range(len(support)))]
        if run.spec.mode == "rank" and not text_only:
            orders += [rng.sample(orders[0], len(support)) for _ in range(self.config.ensembles - 1)]
        prompts = [build_prompt(run.template, query, [support[i][0] for i in order], text_only) for order in orders]
        media = [[m for i in ([] if text_only else order) for m in support[i][1]] + query_media for order in orders]
        return _Query(index, query, [example.id for example, _ in support], prompts, media, broken)

    def _pool_support(
        self, run: _TaskRun, index: int, shots: int, rng: random.Random
    ) -> tuple[list[tuple[Example, list[Any]]], bool, list[int]]:
        """Support from the task's support split with their decoded media, whether text-only, and the indices
        of the support examples passed over as undecodable."""
        pool, broken = run.support.examples, []
        if run.rices is not None and shots > 0:
            while True:  # (the RICES features already exclude every file that failed to decode)
                chosen = run.rices.select(index, shots, exclude=run.broken_support | set(broken))
                support = [s for i in chosen if (s := self._support_example(run, i, broken)) is not None]
                if len(support) == shots:
                    return support, False, sorted(broken)
        k, text_only = support_size(shots)
        support = []
        for i in support_order(len(pool), rng):
            if text_only:  # only their text is shown, which an undecodable image does not spoil
                support.append((pool[i], []))
            elif (example := self._support_example(run, i, broken)) is not None:
                support.append(example)
            if len(support) == k:
                return support, text_only, sorted(broken)
        raise ValueError(f"{k} support examples needed but the support split has only {len(support)} usable")

    def _support_example(self, run: _TaskRun, i: int, broken: list[int]) -> tuple[Example, list[Any]] | None:
        """Support example ``i`` with its decoded media; None (and ``i`` added to ``broken``) if it does not decode."""
        example = run.support.examples[i]
        if i not in run.broken_support:
            try:
                return example, self._load(run, example)
            except MediaError as err:
                logger.warning("%s (support): %s", run.spec.name, err)
                run.broken_support.add(i)  # no other query decodes it again
        broken.append(i)
        return None

    def _episode_support(
        self, run: _TaskRun, query: Example, shots: int, rng: random.Random
    ) -> list[tuple[Example, list[Any]]]:
        """The episode's own first ``shots`` support examples, in a per-query order; 0 shots: none."""
        if len(query.support) < shots:
            raise ValueError(
                f"{run.spec.name}: episode {query.id} has {len(query.support)} support examples, "
                f"fewer than {shots} shots"
            )
        chosen = rng.sample(query.support[:shots], shots)
        return [(example, self._load(run, example)) for example in chosen]

    # ------------------------------------------------------------------ model calls

    @torch.inference_mode()
    def _predict(
        self, run: _TaskRun, shots: int, seed: int, shard: Shard, done: Mapping[int, Any], desc: str
    ) -> Iterator[dict[str, Any]]:
        """The record of each query of ``shard`` not in ``done``, batch by batch.

        Batches are the fixed blocks of ``batch_size`` consecutive queries (less the undecodable ones): a batch
        partly in ``done`` is predicted whole again, so that its members are computed with the same padding as
        in an uninterrupted run, and only its missing records are returned.
        """
        bs = self.config.batch_size
        starts = [s for b, s in enumerate(range(0, len(run.queries), bs)) if shard.owns(b)]
        for start in tqdm(starts, desc=desc, disable=not self.config.progress, leave=False):
            indices = [i for i in range(start, min(start + bs, len(run.queries))) if i not in run.broken_queries]
            if all(i in done for i in indices):
                continue
            batch = []
            for i in indices:
                try:
                    batch.append(self._make_query(run, i, shots, seed))
                except MediaError as err:
                    logger.warning("%s: %s", run.spec.name, err)
                    run.broken_queries.add(i)
                    if i not in done:
                        yield _record(run, shots, seed, i, broken=True)
            if not batch:
                continue
            outputs = self._generate(run, batch) if run.spec.mode == "generate" else self._rank(run, batch)
            for q, out in zip(batch, outputs):
                if q.index not in done:
                    yield _record(run, shots, seed, q.index, prediction=out, query=q)

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


def _record(
    run: _TaskRun,
    shots: int,
    seed: int,
    index: int,
    prediction: Prediction | None = None,
    query: _Query | None = None,
    broken: bool = False,
) -> dict[str, Any]:
    """One query's line of the prediction log: its prediction and support, or that its media is undecodable."""
    record: dict[str, Any] = {"task": run.spec.name, "shots": shots, "seed": seed, "index": index}
    record["id"] = run.queries[index].id
    if broken or prediction is None or query is None:
        return {**record, "broken": True, "broken_support": []}
    logprobs = None if prediction.candidate_logprobs is None else list(prediction.candidate_logprobs)
    return {
        **record,
        "prediction": prediction.text,
        "logprobs": logprobs,
        "support_ids": query.support_ids,
        "broken_support": query.broken_support,
    }


def _prediction(record: Mapping[str, Any]) -> Prediction:
    logprobs = record["logprobs"]
    return Prediction(record["prediction"], None if logprobs is None else tuple(logprobs))


def _check_logged(run: _TaskRun, logged: Mapping[tuple[int, int], Mapping[int, Mapping[str, Any]]]) -> None:
    """Logged predictions must be of this run's queries: the same index holding the same example id."""
    for unit in logged.values():
        for index, record in unit.items():
            if not 0 <= index < len(run.queries) or run.queries[index].id != record.get("id"):
                raise PredictionLogError(
                    f"{run.spec.name}: the prediction log holds query {index} as {record.get('id')!r}, but the "
                    "eval split does not (it changed since those predictions were made); use --overwrite"
                )


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
