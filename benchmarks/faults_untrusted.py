"""Fault campaign "untrusted": crafted files a user downloads or crawls must be refused, never executed or leaked.

Four surfaces, one table row each:

- **pickle**: a payload whose ``__reduce__`` would write a marker file, placed as ``flamingo.bin``,
  ``pytorch_model.bin``, ``model.pt``, ``weights.pth`` (and in place of the safetensors files) wherever the
  library loads weights: Flamingo checkpoints, NFNet / EfficientNet / CLIP directories, the LM directory,
  training-checkpoint resume, the RICES and vision-feature caches, the OpenFlamingo converter.  A case is
  *refused* when loading either fails with a ``ValueError`` or succeeds while ignoring the pickle; either way
  the marker file must not exist afterwards (a marker is a failure, whatever the load returned).
- **tar traversal**: shards with members named ``../../x``, ``/abs/x``, symlinks and hard links to an outside
  secret, next to good records: the readers must yield every good record, never write outside, and never
  put the secret's bytes into a record.
- **html src traversal**: ``flamingo data build-web`` on pages whose ``<img src>`` climbs out, is absolute, a
  ``file:`` URL or a symlink out, plus a symlinked page: counted skips, good pages kept, secret never packed.
- **json limits**: deeply nested (10^5 levels) and oversized (sparse, past the limit) JSON/YAML given to every
  reader of untrusted JSON: a ``ValueError`` naming the file (or a counted skip in a data pipeline).
"""

from __future__ import annotations

import io
import os
import random
import shutil
import tarfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import torch
from faults_common import Outcome, Row, run_case, write_tiny_parts

CAMPAIGN = "untrusted"
SECRET = b"UNTRUSTED-CAMPAIGN-SECRET-7f3a9c"  # the outside file's unique content: must never reach any output
DEEP_JSON = "[" * 100_000 + "]" * 100_000


class _Payload:
    """Unpickling this calls ``os.system`` — the attack every loader must refuse."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"echo pwned > {self.marker}",))


def write_pickle(path: Path, marker: Path) -> None:
    """A torch-format file (zip + pickle) that executes ``os.system`` when loaded without ``weights_only``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"weight": _Payload(marker)}, path)


def _raw_pickle(path: Path, marker: Path) -> None:
    """The same payload as a plain pickle stream (the pre-zip ``.bin`` format)."""
    import pickle

    path.write_bytes(pickle.dumps(_Payload(marker)))


# ------------------------------------------------------------------------------------------------ fixtures


def _build_components(root: Path, seed: int) -> dict[str, Path]:
    """A tiny Flamingo (Llama LM, NFNet vision) saved in full, a CLIP tower and an EfficientNet dir."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    from flamingo_vlm import Flamingo
    from flamingo_vlm.model.vision import HFVisionTower

    torch.manual_seed(seed)
    write_tiny_parts(root, ["a red square is above a blue circle", "two green stars"] * 8, vocab_size=280)
    vit = dict(hidden_size=24, intermediate_size=48, num_hidden_layers=1, num_attention_heads=2, image_size=32)
    HFVisionTower(CLIPVisionModel(CLIPVisionConfig(patch_size=8, **vit)), drop_cls=True).save_pretrained(root / "clip")
    small = dict(num_latents=4, resampler_depth=1, resampler_heads=2, resampler_dim_head=8, max_frames=2)
    model = Flamingo.from_components(
        str(root / "lm"), str(root / "vision"), xattn_heads=2, xattn_dim_head=8, cross_attn_every=2, **small
    )
    model.save_pretrained(root / "flamingo", full=True)
    return {"lm": root / "lm", "nfnet": root / "vision", "clip": root / "clip", "flamingo": root / "flamingo"}


def _copy_with(source: Path, dest: Path, marker: Path, names: list[str], remove: tuple[str, ...] = ()) -> Path:
    """``source`` copied to ``dest``, with payloads under ``names`` and the files ``remove`` deleted."""
    shutil.copytree(source, dest)
    for name in remove:
        (dest / name).unlink()
    for name in names:
        write_pickle(dest / name, marker)
    return dest


# ------------------------------------------------------------------------------------------------ pickle


def _judge_load(load: Callable[[], object], marker: Path) -> Outcome:
    """Refused when the load raised a ValueError or ignored the pickle; a marker file means code ran."""
    from flamingo_vlm.train.checkpoint import CheckpointError

    try:
        load()
        outcome = Outcome(refused=1)  # loaded the safe files, the pickle was never touched
    except (ValueError, CheckpointError) as err:  # CheckpointError: a resume refuses a damaged checkpoint
        outcome = Outcome(refused=1, value_error=str(err))
    if marker.exists():
        raise AssertionError(f"the pickle payload ran: {marker} exists")  # a crash in the table: never acceptable
    return outcome


def _pickle_cases(comp: dict[str, Path], work: Path) -> list[tuple[str, Callable[[], Outcome]]]:
    from flamingo_vlm import Flamingo
    from flamingo_vlm.convert.openflamingo import load_openflamingo_state_dict
    from flamingo_vlm.evaluate.rices import RicesFeatureStore
    from flamingo_vlm.model.causal_lm import load_causal_lm
    from flamingo_vlm.model.efficientnet import EfficientNetLiteEncoder
    from flamingo_vlm.model.vision import load_vision_encoder
    from flamingo_vlm.train.checkpoint import CheckpointManager
    from flamingo_vlm.train.vision_feature_cache import VisionFeatureCache

    cases: list[tuple[str, Callable[[], Outcome]]] = []
    bins = ["flamingo.bin", "pytorch_model.bin", "model.pt", "weights.pth"]

    def add(name: str, make: Callable[[Path, Path], Callable[[], object]]) -> None:
        def case() -> Outcome:
            d = work / name.replace(" ", "_").replace("/", "_")
            marker = d / "MARKER"
            d.mkdir(parents=True)
            return _judge_load(make(d, marker), marker)

        cases.append((name, case))

    def flamingo_dir(d: Path, m: Path, remove: tuple[str, ...] = ()) -> Path:
        f = _copy_with(comp["flamingo"], d / "ckpt", m, bins, remove)
        for sub in ("lm", "vision"):
            for name in bins:
                write_pickle(f / sub / name, m)
        return f

    add(
        "Flamingo.from_pretrained: pickles beside safetensors",
        lambda d, m: lambda: Flamingo.from_pretrained(flamingo_dir(d, m)),
    )
    add(
        "Flamingo.from_pretrained: pickle as flamingo.safetensors",
        lambda d, m: (
            lambda: Flamingo.from_pretrained(
                (f := flamingo_dir(d, m, ("flamingo.safetensors",))), write_pickle(f / "flamingo.safetensors", m)
            )
        ),
    )
    add(
        "Flamingo.from_pretrained: only pickles",
        lambda d, m: lambda: Flamingo.from_pretrained([write_pickle(d / n, m) for n in bins] and d),
    )

    def swapped(kind: str, names: list[str], load: Callable[[str], object] = load_vision_encoder):
        """A saved ``kind`` directory whose model.safetensors is replaced by payloads under ``names``."""
        return lambda d, m: lambda: load(str(_copy_with(comp[kind], d / kind, m, names, ("model.safetensors",))))

    add("NFNet dir: pickle instead of model.safetensors", swapped("nfnet", bins))
    add("NFNet dir: pickle named model.safetensors", swapped("nfnet", ["model.safetensors"]))

    def efficientnet_dir(d: Path, m: Path) -> Path:
        out = d / "eff"
        out.mkdir()
        (out / "config.json").write_text(
            '{"model_type": "efficientnet_lite", "variant": "efficientnet-lite0", "image_size": 224,'
            ' "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}'
        )
        for name in bins:
            write_pickle(out / name, m)
        return out

    add(
        "EfficientNet dir: only pickles",
        lambda d, m: lambda: EfficientNetLiteEncoder.from_pretrained(efficientnet_dir(d, m)),
    )

    def efficientnet_package(d: Path, m: Path) -> Callable[[], object]:
        import flamingo_vlm.model.efficientnet as eff

        write_pickle(d / "efficientnet-lite0-evil.pth", m)
        eff.pretrained_weights_path = lambda variant: d / "efficientnet-lite0-evil.pth"  # the package's file swapped
        return lambda: EfficientNetLiteEncoder.from_package("efficientnet-lite0")

    add("EfficientNet package: crafted .pth", efficientnet_package)
    add("CLIP dir: pytorch_model.bin instead of safetensors", swapped("clip", bins))
    add("LM dir (transformers): pytorch_model.bin only", swapped("lm", ["pytorch_model.bin"], load_causal_lm))

    def resume(d: Path, m: Path) -> Callable[[], object]:
        step = _copy_with(comp["flamingo"], d / "run" / "step-00000010", m, bins, ("flamingo.safetensors",))
        write_pickle(step / "flamingo.safetensors", m)
        write_pickle(step / "optimizer.safetensors", m)
        _raw_pickle(step / ".metadata", m)  # torch.distributed.checkpoint pickles it: only FSDP resumes read it
        write_pickle(step / "rank-0.safetensors", m)
        (step / "trainer_state.json").write_text('{"step": 10, "optimizer": {}}')

        def load() -> None:
            model = Flamingo.from_pretrained(comp["flamingo"])
            optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
            restored = CheckpointManager(d / "run").load_latest(model, optimizer)  # no manifest: skipped, warned
            if restored is not None:
                raise AssertionError("a crafted checkpoint was resumed")
            CheckpointManager(d / "run").load(step, model, optimizer)  # loading it explicitly: refused

        return load

    add("checkpoint resume dir", resume)

    def resume_fsdp(d: Path, m: Path) -> Callable[[], object]:
        step = _copy_with(comp["flamingo"], d / "run" / "step-00000010", m, bins)
        (step / "sharded").mkdir()
        _raw_pickle(step / "sharded" / ".metadata", m)  # what torch.distributed.checkpoint unpickles
        write_pickle(step / "sharded" / "__0_0.distcp", m)
        write_pickle(step / "rank-0.safetensors", m)
        (step / "trainer_state.json").write_text('{"step": 10}')

        def load() -> None:
            model = Flamingo.from_pretrained(comp["flamingo"])
            optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
            CheckpointManager(d / "run", sharded=True).load(step, model, optimizer)

        return load

    add("checkpoint resume dir (FSDP .metadata)", resume_fsdp)

    def rices(d: Path, m: Path) -> Callable[[], object]:
        write_pickle(d / "rices-abc.safetensors", m)
        return lambda: RicesFeatureStore(d, "abc")  # a foreign cache is recomputed, never unpickled

    add("RICES feature cache", rices)

    def feature_cache(d: Path, m: Path) -> Callable[[], object]:
        cache = VisionFeatureCache.__new__(VisionFeatureCache)
        write_pickle(d / "x.safetensors", m)
        return lambda: cache._load(d / "x.safetensors")  # a miss, recomputed

    add("vision feature cache entry", feature_cache)

    def converter(d: Path, m: Path) -> Callable[[], object]:
        write_pickle(d / "checkpoint.pt", m)
        _raw_pickle(d / "old.bin", m)
        return lambda: [_swallow_value_error(load_openflamingo_state_dict, d / n) for n in ("checkpoint.pt", "old.bin")]

    add("OpenFlamingo converter (.pt, raw pickle .bin)", converter)
    return cases


def _swallow_value_error(fn: Callable[[Path], object], path: Path) -> None:
    try:
        fn(path)
    except ValueError:
        pass
    else:
        raise AssertionError(f"{path}: a pickle payload was loaded as a checkpoint")


# ------------------------------------------------------------------------------------------------ tar traversal


def _tar_case(work: Path, rng: random.Random, kind: str) -> Outcome:
    from PIL import Image

    from flamingo_vlm.data import ImageTextDataset, Slot
    from flamingo_vlm.data.shards import read_shard
    from flamingo_vlm.data.skips import SkipCounts

    root = work / "root"
    (root / "shards").mkdir(parents=True)
    outside = work / "outside"
    outside.mkdir()
    secret = outside / "secret.txt"
    secret.write_bytes(SECRET)
    before = {str(p.relative_to(work)) for p in work.rglob("*")}

    buf = io.BytesIO()
    Image.new("RGB", (32, 32), tuple(rng.randrange(256) for _ in range(3))).save(buf, format="PNG")
    png = buf.getvalue()
    n_good = rng.randint(2, 4)
    path = root / "shards" / "s-000000.tar"
    with tarfile.open(path, "w") as tar:

        def add(name: str, data: bytes | None = None, **attrs) -> None:
            info = tarfile.TarInfo(name)
            for k, v in attrs.items():
                setattr(info, k, v)
            info.size = len(data) if data is not None else 0
            tar.addfile(info, io.BytesIO(data) if data is not None else None)

        for i in range(n_good):
            add(f"good{i}.png", png)
            add(f"good{i}.txt", f"caption {i}".encode())
        bad = f"bad{rng.randrange(10**6)}"
        if kind == "dotdot":
            add(f"../../{bad}.png", png)
            add(f"../../{bad}.txt", b"climbing out")
        elif kind == "absolute":
            add(f"{outside}/{bad}.png", png)
            add(f"{outside}/{bad}.txt", b"absolute")
        elif kind == "symlink":
            add(f"{bad}.txt", type=tarfile.SYMTYPE, linkname=str(secret))
            add(f"{bad}.png", png)
        elif kind == "hardlink":
            add(f"{bad}.txt", type=tarfile.LNKTYPE, linkname=str(secret))
            add(f"{bad}.png", png)
        elif kind == "symlink_dir":  # a directory symlink, then a file "through" it
            add("escape", type=tarfile.SYMTYPE, linkname=str(outside))
            add(f"escape/{bad}.txt", b"written through a symlink?")
            add(f"escape/{bad}.png", png)

    skipped = SkipCounts()
    records = list(read_shard(str(path), skipped))
    blob = b"".join(v for r in records for v in r.values() if isinstance(v, bytes))
    if SECRET in blob:
        raise AssertionError(f"{kind}: the outside secret's bytes came out of the shard reader")
    good = sum(r["__key__"].startswith("good") and {"png", "txt"} <= set(r) for r in records)
    # the dataset decodes the whole shard (a bad member is at most an in-memory record: its name is only a
    # dict key, never a path) without writing anything
    stream = ImageTextDataset(str(path), _TOKENIZER, _transform, max_length=8, shuffle_buffer=1).samples(Slot())
    skips: Counter = Counter(skipped)
    for _ in range(len(records) + 1):
        skips.update(next(stream)["__skipped__"])
    after = {str(p.relative_to(work)) for p in work.rglob("*")}
    if after - before != {"root/shards/s-000000.tar"}:
        raise AssertionError(f"{kind}: files appeared on disk: {sorted(after - before)}")
    if secret.read_bytes() != SECRET:
        raise AssertionError(f"{kind}: the outside file was overwritten")
    return Outcome(good_out=good, good_expected=n_good, skips=skips, refused=1)


_TOKENIZER = None


def _transform(image):
    from flamingo_vlm.image_processing import FlamingoImageProcessor

    return FlamingoImageProcessor(32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))(image)


# ------------------------------------------------------------------------------------------------ html src


def _html_case(work: Path, rng: random.Random, kind: str) -> Outcome:
    from PIL import Image

    from flamingo_vlm.data.build import build_web_shards, find_pages, page_roots

    outside = work / "outside"
    outside.mkdir(parents=True)
    buf = io.BytesIO()
    Image.new("RGB", (80, 80), (rng.randrange(256), 7, 9)).save(buf, format="PNG")
    secret_png = (
        buf.getvalue() + SECRET
    )  # a valid PNG with the marker appended: decodes, so only the root check stops it
    (outside / "photo.png").write_bytes(secret_png)
    (outside / "page.html").write_bytes(b"<p>" + SECRET + b'</p><img src="photo.png">')
    site = work / "crawl" / "site"
    (site / "img").mkdir(parents=True)
    buf = io.BytesIO()
    Image.new("RGB", (80, 80), (1, rng.randrange(256), 3)).save(buf, format="PNG")
    (site / "img" / "ok.png").write_bytes(buf.getvalue())
    n_good = rng.randint(1, 3)
    for i in range(n_good):
        (site / f"good{i}.html").write_text(f'<p>good page {i}</p><img src="img/ok.png">')
    src = {
        "dotdot": "../../outside/photo.png",
        "absolute": str(outside / "photo.png"),
        "file_url": f"file://{outside / 'photo.png'}",
        "file_url_short": f"file:{outside / 'photo.png'}",
        "symlink": "img/link.png",
        "encoded": "..%2F..%2Foutside%2Fphoto.png",
    }.get(kind)
    if kind == "symlink":
        (site / "img" / "link.png").symlink_to(outside / "photo.png")
    if kind == "symlinked_page":
        (site / "evil.html").symlink_to(outside / "page.html")
    elif kind == "symlinked_folder":
        (site / "linked").symlink_to(outside, target_is_directory=True)
    else:
        (site / "evil.html").write_text(f'<p>evil</p><img src="{src}"><img src="img/ok.png">')
        n_good += 1  # the evil page keeps its good image
    report = build_web_shards(find_pages([site]), work / "out", progress=False, roots=page_roots([site]))
    for shard in report.shards:
        if SECRET in Path(shard).read_bytes():
            raise AssertionError(f"{kind}: a file outside the pages folder was packed")
    skips = Counter({f"image:{k}": v for k, v in report.images_skipped.items()})
    skips.update({f"page:{k}": v for k, v in report.pages_skipped.items()})
    return Outcome(good_out=report.pages_kept, good_expected=n_good, skips=skips, refused=1)


# ------------------------------------------------------------------------------------------------ json limits


def _json_cases(comp: dict[str, Path], work: Path) -> list[tuple[str, Callable[[], Outcome]]]:
    from flamingo_vlm.config import FlamingoConfig, load_config
    from flamingo_vlm.data.document import Document
    from flamingo_vlm.data.skips import BadSample
    from flamingo_vlm.data.text import decode_text
    from flamingo_vlm.evaluate.tasks import get_task
    from flamingo_vlm.io import MAX_ANNOTATION_BYTES, MAX_JSON_BYTES
    from flamingo_vlm.model.vision import load_vision_encoder
    from flamingo_vlm.processing import FlamingoProcessor
    from flamingo_vlm.recipes.demo import DemoConfig
    from flamingo_vlm.train.checkpoint import verify

    def write(path: Path, how: str, limit: int) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        if how == "deep":
            path.write_text(DEEP_JSON)
        else:  # sparse: past the limit on disk without costing the disk
            with open(path, "wb") as f:
                f.truncate(limit + 1)
        return path

    def refused(fn: Callable[[], object], name: str) -> Outcome:
        try:
            fn()
        except ValueError as err:
            if name not in str(err):
                raise AssertionError(f"the error does not name {name}: {err}") from err
            return Outcome(value_error=str(err), refused=1)
        raise AssertionError(f"{name} was accepted")

    def skipped(fn: Callable[[], object]) -> Outcome:
        try:
            fn()
        except BadSample as e:
            return Outcome(skips=Counter({e.reason: 1}), refused=1)
        raise AssertionError("a crafted record was accepted")

    cases: list[tuple[str, Callable[[], Outcome]]] = []
    ann = MAX_ANNOTATION_BYTES
    for how in ("deep", "oversized"):

        def annotation(task: str, name: str, split: str, how: str = how) -> Callable[[], Outcome]:
            def case() -> Outcome:
                write(work / f"{task}-{how}" / name, how, ann)
                return refused(lambda: get_task(task).reader(work / f"{task}-{how}", split), name)

            return case

        vqa = annotation("vqav2", "v2_OpenEnded_mscoco_val2014_questions.json", "val")
        coco = annotation("coco", "dataset_coco.json", "test")
        episodes = annotation("shapesworld_attribute", "test.json", "test")

        def memes(how=how) -> Outcome:
            root = work / f"memes-{how}"
            if how == "deep":  # one crafted line among good ones is a counted malformed record
                write(root / "dev_seen.jsonl", how, ann)
                split = get_task("hateful_memes").reader(root, "dev_seen")
                return Outcome(skips=Counter(split.bad), refused=1)
            write(root / "dev_seen.jsonl", how, ann)
            return refused(lambda: get_task("hateful_memes").reader(root, "dev_seen"), "dev_seen.jsonl")

        def flamingo_config(how=how) -> Outcome:
            path = write(work / f"fc-{how}" / "flamingo_config.json", how, MAX_JSON_BYTES)
            return refused(lambda: FlamingoConfig.load(path), "flamingo_config.json")

        def vision_config(how=how) -> Outcome:
            d = work / f"nf-{how}"
            shutil.copytree(comp["nfnet"], d)
            write(d / "config.json", how, MAX_JSON_BYTES)
            return refused(lambda: load_vision_encoder(str(d)), "config.json")

        def processor_config(how=how) -> Outcome:
            d = work / f"proc-{how}"
            write(d / "processor_config.json", how, MAX_JSON_BYTES)
            return refused(lambda: FlamingoProcessor.from_pretrained(d), "processor_config.json")

        def manifest(how=how) -> Outcome:
            d = work / f"ckpt-{how}"
            write(d / "manifest.json", how, MAX_JSON_BYTES)
            try:
                verify(d)
            except Exception as err:  # CheckpointError: the resume falls back to the previous checkpoint
                if type(err).__name__ != "CheckpointError" or "manifest.json" not in str(err):
                    raise
                return Outcome(refused=1, value_error=str(err))
            raise AssertionError("a crafted manifest verified")

        def yaml_config(how=how) -> Outcome:
            path = write(work / f"yaml-{how}" / "demo.yaml", how, MAX_JSON_BYTES)
            return refused(lambda: load_config(DemoConfig, path), "demo.yaml")

        for name, fn in [
            ("VQAv2 questions", vqa),
            ("COCO Karpathy", coco),
            ("ShapesWorld episodes", episodes),
            ("HatefulMemes jsonl", memes),
            ("flamingo_config.json", flamingo_config),
            ("vision config.json", vision_config),
            ("processor_config.json", processor_config),
            ("checkpoint manifest", manifest),
            ("YAML config", yaml_config),
        ]:
            cases.append((f"{how} {name}", fn))
    cases.append(("deep shard document json", lambda: skipped(lambda: Document.from_json(DEEP_JSON.encode()))))
    cases.append(("deep caption json", lambda: skipped(lambda: decode_text(DEEP_JSON.encode(), "json"))))
    return cases


# ------------------------------------------------------------------------------------------------ driver


def run(seed: int, scale: float = 1.0, workdir: Path | None = None) -> list[Row]:
    """Every surface at full scale; a small ``scale`` runs a seeded subset of each row's cases."""
    global _TOKENIZER
    from flamingo_vlm.tokenization import add_flamingo_tokens, train_bpe_tokenizer

    workdir = Path(workdir) if workdir is not None else Path.cwd() / "faults-untrusted"
    workdir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    comp = _build_components(workdir / "components", seed)
    _TOKENIZER = train_bpe_tokenizer(["caption one two three four"] * 4, vocab_size=270)
    add_flamingo_tokens(_TOKENIZER)

    def pick(cases: list, minimum: int = 2) -> list:
        n = max(minimum, round(len(cases) * min(scale, 1.0)))
        return cases if n >= len(cases) else rng.sample(cases, n)

    rows = []
    row = Row(CAMPAIGN, "pickle payload by load location")
    for name, fn in pick(_pickle_cases(comp, workdir / "pickle"), 3):
        run_case(row, name, fn, timeout=60)
    rows.append(row)

    row = Row(CAMPAIGN, "tar member traversal (shard readers)")
    kinds = ["dotdot", "absolute", "symlink", "hardlink", "symlink_dir"]
    for i, kind in enumerate(pick(kinds * max(1, round(2 * scale)), 2)):
        run_case(row, f"tar {kind}", lambda k=kind, i=i: _tar_case(workdir / "tar" / f"{i}-{k}", rng, k), timeout=30)
    rows.append(row)

    row = Row(CAMPAIGN, "html <img src> traversal (build-web)")
    kinds = [
        "dotdot",
        "absolute",
        "file_url",
        "file_url_short",
        "symlink",
        "encoded",
        "symlinked_page",
        "symlinked_folder",
    ]
    for i, kind in enumerate(pick(kinds, 2)):
        run_case(row, f"html {kind}", lambda k=kind, i=i: _html_case(workdir / "html" / f"{i}-{k}", rng, k), timeout=30)
    rows.append(row)

    row = Row(CAMPAIGN, "json/yaml size and depth limits")
    for name, fn in pick(_json_cases(comp, workdir / "json"), 3):
        run_case(row, name, fn, timeout=30)
    rows.append(row)
    return rows
