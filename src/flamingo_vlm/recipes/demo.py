"""The paper's whole recipe on ShapesWorld, stage by stage (``flamingo demo``).

1. **world** — render the training corpora (web pages → shards, pairs, videos, LM text) and the
   evaluation sets (from another seed) with :func:`~flamingo_vlm.world.generate_world`;
2. **vision** — contrastively pretrain the built-in NFNet encoder on the image–text pairs (or take a
   pretrained encoder), then probe what its features tell apart (a shape's colour, shape, size, position);
3. **lm** — train a byte-level BPE tokenizer and pretrain a small Llama on the world's text (or take a
   pretrained LM), then the go/no-go check: text-only in-context binding accuracy of that LM;
4. **flamingo** — freeze both and train Flamingo on the λ-weighted mixture with the real
   :class:`~flamingo_vlm.train.Trainer`;
5. **eval** — few-shot evaluation of every task through the real harness, with three baselines:
   chance, a *blind* model (every image blanked) and a *shuffled* one (each query shown another's image).

A preset is a :class:`DemoConfig` YAML file under ``configs/demo/`` built from the components' own config
sections; its paths are relative to the run's output directory. Each stage records its results in
``stages/<name>.json``; a re-run reuses finished stages.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import resource
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from flamingo_vlm.evaluate.runner import EvalConfig
from flamingo_vlm.model.nfnet import NFNetConfig
from flamingo_vlm.pretrain import ContrastiveConfig, LMConfig
from flamingo_vlm.pretrain.schedule import progress_callback
from flamingo_vlm.recipes.demo_report import Targets, query_command, write_report
from flamingo_vlm.train.config import TrainConfig, resolve_precision
from flamingo_vlm.world.generate import WorldConfig, generate_world
from flamingo_vlm.world.scene import RenderConfig

logger = logging.getLogger(__name__)

EVAL_TASKS = (
    "vqav2",
    "msrvttqa",
    "hateful_memes",
    "imagenet",
    "coco",
    "shapesworld_attribute",
    "shapesworld_binding",
    "vatex",
    "youcook2",
    "ivqa",
    "nextqa",
    "star",
    "visdial",
    "rareact",
)


@dataclass
class TaskEval:
    """One task's departures from the demo's ``eval`` section (None keeps it): fewer queries or shot counts
    for the tasks that only need to show they run end to end within the preset's time."""

    shots: tuple[int, ...] | None = None
    max_examples: int | None = None


@dataclass
class VisionStage:
    """The frozen vision encoder: a pretrained one, or the built-in NFNet trained contrastively on the pairs."""

    pretrained: str | None = None  # e.g. "efficientnet-lite0"; None: train ``nfnet`` on the world's pairs
    image_size: int | None = None  # read a pretrained encoder at this size (ShapesWorld's pictures are small)
    nfnet: NFNetConfig = field(default_factory=NFNetConfig)
    contrastive: ContrastiveConfig = field(default_factory=ContrastiveConfig)
    batch_size: int = 64


@dataclass
class LMStage:
    """The frozen LM: a pretrained one, or a small Llama pretrained on the world's text with its own tokenizer."""

    pretrained: str | None = None  # e.g. "smollm2-135m-instruct", a .gguf, a directory or a hub id
    vocab_size: int = 1024  # the world's own byte-level BPE tokenizer
    model: LMConfig = field(default_factory=LMConfig)


@dataclass
class DemoConfig:
    """Every stage of the demo; ``train`` paths are relative to the run's output directory."""

    world: str = "quick"  # ShapesWorld size preset (flamingo_vlm.world.PRESETS)
    image_size: int = 64  # rendered picture size
    seed: int = 0  # seeds every stage: world, pretraining, training, evaluation
    probes: int = 100  # LM binding probes; the vision probe fits on 15× this many scenes
    vision: VisionStage = field(default_factory=VisionStage)
    lm: LMStage = field(default_factory=LMStage)
    train: TrainConfig = field(default_factory=TrainConfig)
    tasks: tuple[str, ...] = EVAL_TASKS
    eval: EvalConfig = field(default_factory=EvalConfig)
    caption_shots: tuple[int, ...] | None = None  # COCO's shot counts, if not eval.shots
    task_eval: dict[str, TaskEval] = field(default_factory=dict)  # per task: shots / max_examples
    targets: Targets = field(default_factory=Targets)


Config = DemoConfig
DEFAULT_CONFIG = "quick"


def load_demo_config(preset: str, overrides: list[str] | None = None) -> DemoConfig:
    """A preset by name (``configs/demo/<name>.yaml``) or by path, with ``key=value`` overrides."""
    from flamingo_vlm.recipes import resolve_config

    return resolve_config("demo", preset, overrides or [])


@dataclass
class Recipe:
    """Runs the stages under ``out``; ``fresh`` redoes stages that already finished."""

    out: Path
    config: DemoConfig
    fresh: bool = False
    progress: bool = True
    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    results: dict[str, Any] = field(default_factory=dict)

    def stage(self, name: str, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Run (or reuse) one stage; its result and wall time are kept in ``stages/<name>.json``."""
        record = self.out / "stages" / f"{name}.json"
        if record.is_file() and not self.fresh:
            result = json.loads(record.read_text())
            result["reused"] = True
        else:
            print(f"== stage {name}", flush=True)
            start = time.perf_counter()
            result = run()
            result["seconds"] = round(time.perf_counter() - start, 1)
            result["peak_rss_mib"] = round(peak_rss_mib(), 1)  # this process's high-water mark so far
            record.parent.mkdir(parents=True, exist_ok=True)
            record.write_text(json.dumps(result, indent=1) + "\n")
            result["reused"] = False
        self.results[name] = result
        return result

    # ------------------------------------------------------------------ stages

    def world(self) -> dict[str, Any]:
        c = self.config
        config = WorldConfig(seed=c.seed, preset=c.world, render=RenderConfig(image_size=c.image_size))
        manifest = generate_world(self.out / "world", config, progress=self.progress)
        return {"manifest": str(self.out / "world" / "world.json"), "web_build": manifest["train"]["web_build"]}

    def texts(self) -> list[str]:
        """The LM's corpus: the world's text documents, its web pages and its alt-texts.

        The paper's LM had read text of every kind its Flamingo later saw. Here the pages and the
        captions are laid out exactly as Flamingo's samplers will show them, ``<image>`` and
        ``<|endofchunk|>`` included: an LM that never read that layout (text right after a marker,
        the chunk ends) leaves Flamingo's new layers to spend their training on the layout instead
        of on the images (docs/results.md has the measurement).
        """
        from flamingo_vlm.data import document_text, parse_html
        from flamingo_vlm.tokenization import EOC_TOKEN, MEDIA_TOKEN

        train = self.out / "world" / "train"
        texts = [json.loads(line)["text"] for line in (train / "text.jsonl").read_text().splitlines() if line.strip()]
        for page in sorted((train / "pages").rglob("*.html")):
            texts.append(document_text(parse_html(page.read_bytes(), base=str(page.parent))))
        for shard in sorted((train / "pairs").glob("*.tar")) + sorted((train / "videos").glob("*.tar")):
            with tarfile.open(shard) as tar:
                texts += [
                    f"{MEDIA_TOKEN}{tar.extractfile(m).read().decode()}{EOC_TOKEN}"
                    for m in tar.getmembers()
                    if m.name.endswith(".txt")
                ]
        return texts

    def vision(self) -> dict[str, Any]:
        """Contrastively pretrain the NFNet on the world's pairs, or take the configured pretrained encoder;
        then probe what its features tell apart."""
        from transformers import AutoTokenizer

        from flamingo_vlm.data import ImageTextDataset, Mixture, MixtureComponent
        from flamingo_vlm.model.nfnet import NFNetEncoder
        from flamingo_vlm.model.vision import load_vision_encoder
        from flamingo_vlm.pretrain import pretrain_vision_encoder
        from flamingo_vlm.processing import FlamingoProcessor
        from flamingo_vlm.world.probe import vision_probe

        c, stage = self.config, self.config.vision
        tokenizer = AutoTokenizer.from_pretrained(self.out / "lm")
        if stage.pretrained is not None:
            encoder = load_vision_encoder(stage.pretrained)
            # A convolutional encoder can read small pictures at less than its native size.
            encoder.image_size = stage.image_size or encoder.image_size
            result: dict[str, Any] = {"pretrained": stage.pretrained, "image_size": encoder.image_size}
        else:
            torch.manual_seed(c.seed)
            encoder = NFNetEncoder(stage.nfnet)
            processor = FlamingoProcessor(tokenizer, encoder.image_size, encoder.image_mean, encoder.image_std)
            pairs = ImageTextDataset(
                str(self.out / "world" / "train" / "pairs"),
                processor.tokenizer,
                processor.transform_image,
                max_length=48,
                seed=c.seed,
            )
            mixture = Mixture([MixtureComponent(pairs, 1.0, stage.batch_size, "pairs")], seed=c.seed)
            on_step = progress_callback(stage.contrastive.steps, "vision", self.progress)
            batches = (step["pairs"][0] for step in mixture)
            history = pretrain_vision_encoder(encoder, batches, len(processor.tokenizer), stage.contrastive, on_step)
            result = {"loss": history}
        encoder.save_pretrained(self.out / "vision")
        processor = FlamingoProcessor(tokenizer, encoder.image_size, encoder.image_mean, encoder.image_std)
        probe = vision_probe(
            encoder, processor.transform_image, RenderConfig(image_size=c.image_size), c.seed, num_scenes=15 * c.probes
        )
        return {**result, "parameters": sum(t.numel() for t in encoder.parameters()), "probe": probe}

    def tokenizer(self) -> dict[str, Any]:
        from flamingo_vlm.tokenization import EOC_TOKEN, MEDIA_TOKEN, add_flamingo_tokens, train_bpe_tokenizer

        plain = (text.replace(MEDIA_TOKEN, " ").replace(EOC_TOKEN, " ") for text in self.texts())
        tokenizer = train_bpe_tokenizer(plain, vocab_size=self.config.lm.vocab_size)
        add_flamingo_tokens(tokenizer)  # in the LM's vocabulary from the start: it reads them in its corpus
        tokenizer.save_pretrained(self.out / "lm")
        return {"vocab_size": len(tokenizer)}

    def lm(self) -> dict[str, Any]:
        """Pretrain the world's own small Llama, or bring the pretrained LM in as a plain directory
        (a GGUF is dequantized once here, so later stages load it in a second); then the go/no-go check."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from flamingo_vlm.world.probe import text_binding_accuracy

        c, stage = self.config, self.config.lm
        if stage.pretrained is not None:
            from flamingo_vlm.model.causal_lm import export_lm

            export_lm(stage.pretrained, self.out / "lm")
            model = AutoModelForCausalLM.from_pretrained(self.out / "lm")
            tokenizer = AutoTokenizer.from_pretrained(self.out / "lm")
            result: dict[str, Any] = {"pretrained": stage.pretrained}
        else:
            from flamingo_vlm.pretrain import build_llama, pretrain_lm

            tokenizer = AutoTokenizer.from_pretrained(self.out / "lm")
            torch.manual_seed(c.seed)
            model = build_llama(tokenizer, stage.model)
            on_step = progress_callback(stage.model.steps, "lm", self.progress)
            result = {"loss": pretrain_lm(model, tokenizer, self.texts(), stage.model, c.seed, on_step)}
            model.save_pretrained(self.out / "lm")
        probes = self.out / "world" / "eval" / "text_binding" / "test.jsonl"
        binding = text_binding_accuracy(model, tokenizer, probes, limit=c.probes)
        return {
            **result,
            "parameters": sum(t.numel() for t in model.parameters()),
            "text_binding_accuracy": binding["accuracy"],
            "text_binding_chance": binding["chance"],
        }

    def train_config(self) -> TrainConfig:
        """The configured training run, its paths resolved under ``out`` and seeded by the demo's seed."""
        train = TrainConfig.from_dict(self.config.train.to_dict())

        def under_out(path: str) -> str:
            return str(self.out / path)

        train.model.lm, train.model.vision = under_out(train.model.lm), under_out(train.model.vision)
        for dataset in [*train.data.datasets, *([train.data.probe] if train.data.probe else [])]:
            shards = dataset.shards
            dataset.shards = [under_out(s) for s in shards] if isinstance(shards, list) else under_out(shards)
        train.output_dir = under_out(train.output_dir)
        train.seed = train.data.seed = self.config.seed
        train.device, train.logging.progress = self.device, self.progress
        return train

    def flamingo(self) -> dict[str, Any]:
        from flamingo_vlm.model.vision_use import mean_vision_use
        from flamingo_vlm.train import Trainer
        from flamingo_vlm.train.build import build_mixture, build_model, build_probe_batch, heldout_batches

        config = self.train_config()
        model = build_model(config)
        summary = Trainer(model, config, build_mixture(config, model), probe=build_probe_batch(config, model)).fit()
        model.save_pretrained(self.out / "checkpoint", full=True)
        trainable = sum(t.numel() for t in model.trainable_state_dict().values())
        with self.autocast():  # does it see? every held-out pair's caption NLL, right vs shuffled vs blank images
            heldout = mean_vision_use(model, heldout_batches(config.data.probe, model, batch_size=20))
        return {
            "summary": summary,
            "trainable_parameters": trainable,
            "heldout": heldout.record(),
            "frozen_parameters": sum(t.numel() for t in model.parameters()) - trainable,
        }

    def evaluate(self, media_ablation: str = "none") -> dict[str, Any]:
        """Every task few-shot through the real harness; a baseline differs only in ``media_ablation``."""
        from flamingo_vlm import Flamingo, FlamingoProcessor
        from flamingo_vlm.evaluate.runner import Evaluator
        from flamingo_vlm.evaluate.tasks import get_task

        c = self.config
        model = Flamingo.from_pretrained(self.out / "checkpoint").to(self.device).eval()
        processor = FlamingoProcessor.from_model(model)
        results = {}
        for task in c.tasks:
            config = replace(
                c.eval,
                shots=self.task_shots(task),
                max_examples=self.task_max_examples(task),
                seed=c.seed,
                media_ablation=media_ablation,
                progress=self.progress,
                cache_dir=str(self.out / "cache"),
            )
            start = time.perf_counter()
            with self.autocast():
                result, rows = Evaluator(model, processor, config).evaluate(
                    get_task(task), self.out / "world" / "eval" / task
                )
            result["seconds"] = round(time.perf_counter() - start, 1)  # what each task adds to the stage
            result["examples"] = rows[: 2 * len(config.shots)]
            results[task] = result
        return {"tasks": results}

    def task_shots(self, task: str) -> tuple[int, ...]:
        from flamingo_vlm.evaluate.tasks import get_task

        c, own = self.config, self.config.task_eval.get(task, TaskEval())
        if get_task(task).zero_shot_only:  # RareAct: zero-shot by definition
            return (0,)
        if own.shots is not None:
            return own.shots
        return c.caption_shots if task == "coco" and c.caption_shots else c.eval.shots

    def task_max_examples(self, task: str) -> int | None:
        own = self.config.task_eval.get(task, TaskEval()).max_examples
        return own if own is not None else self.config.eval.max_examples

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast for evaluation when the run trains in bf16 (the model it was trained as)."""
        if resolve_precision(self.config.train.precision, torch.device(self.device)) != "bf16":
            return contextlib.nullcontext()
        return torch.autocast(torch.device(self.device).type, dtype=torch.bfloat16)

    def chance(self) -> dict[str, Any]:
        from flamingo_vlm.evaluate.baselines import chance_baseline

        root = self.out / "world" / "eval"
        return {
            "tasks": {
                task: chance_baseline(task, root / task, self.task_max_examples(task)) for task in self.config.tasks
            }
        }

    # ------------------------------------------------------------------ all of it

    def check_wordnet(self) -> None:
        """NExT-QA's WUPS reads WordNet from disk: find out before training, and where it is missing leave that
        one task out (saying so) rather than stop the demo, which must run on any machine."""
        if "nextqa" not in self.config.tasks:
            return
        from flamingo_vlm.evaluate.metrics.wups import load_wordnet

        try:
            load_wordnet()
        except ValueError as e:
            print(f"!! leaving nextqa out of the demo: {e}")
            self.config = replace(self.config, tasks=tuple(t for t in self.config.tasks if t != "nextqa"))

    def run(self) -> dict[str, Any]:
        self.check_wordnet()
        self.out.mkdir(parents=True, exist_ok=True)
        self.stage("world", self.world)
        if self.config.lm.pretrained is None:
            self.stage("tokenizer", self.tokenizer)  # the world's own LM reads the world's own tokenizer
        lm = self.stage("lm", self.lm)
        self.stage("vision", self.vision)
        if lm["text_binding_accuracy"] < lm["text_binding_chance"] + 0.2:
            print(
                f"!! go/no-go: the LM's text-only binding accuracy is {lm['text_binding_accuracy']:.0%} "
                f"(chance {lm['text_binding_chance']:.0%}): in-context binding cannot emerge in Flamingo "
                "from this LM; continuing, and the report flags it."
            )
        self.stage("flamingo", self.flamingo)
        self.stage("eval", self.evaluate)
        self.stage("eval_blind", lambda: self.evaluate("blank"))
        self.stage("eval_shuffled", lambda: self.evaluate("shuffle"))
        self.stage("chance", self.chance)
        return self.results


def peak_rss_mib() -> float:
    """The peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------------------------------------------------------------
# flamingo demo


def main(
    config: DemoConfig, out: str | Path = "runs/demo", name: str = "demo", fresh: bool = False, progress: bool = True
) -> int:
    """Run every stage under ``out``, then write ``report.md`` and print how to query the checkpoint."""
    out = Path(out)
    start = time.perf_counter()
    results = Recipe(out, config, fresh=fresh, progress=progress).run()
    # Wall time of this run, plus the recorded time of the stages it reused from an earlier one.
    total = time.perf_counter() - start + sum(r["seconds"] for r in results.values() if r["reused"])
    report = write_report(out, results, name, total, peak_rss_mib(), config.targets)
    print(f"\nreport: {report}\ncheckpoint: {out / 'checkpoint'}\nquery it:\n  {query_command(out)}")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="override preset entries, e.g. train.max_steps=100 eval.max_examples=20",
    )
    parser.add_argument(
        "--preset",
        default="quick",
        help="a name under configs/demo/ or a YAML path. tiny: seconds (tests); quick: ≤10 min on 2 "
        "CPU cores, the world's own small LM and encoder; full: ≈50 min; smollm-quick / smollm: real "
        "pretrained SmolLM2-135M and EfficientNet-Lite0, ≤10 / ≤60 min",
    )
    parser.add_argument("--out", default="runs/demo")
    parser.add_argument("--seed", type=int, default=None, help="short for seed=N")
    parser.add_argument("--fresh", action="store_true", help="redo stages that already finished")
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    overrides = args.overrides + ([f"seed={args.seed}"] if args.seed is not None else [])
    config = load_demo_config(args.preset, overrides)
    return main(config, args.out, Path(args.preset).stem, fresh=args.fresh, progress=not args.no_progress)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="the whole Flamingo recipe on the built-in ShapesWorld")
    add_arguments(parser)
    parser.set_defaults(func=run)
