"""Every reader on a tiny benchmark written in its published layout, plus bad-input counting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flamingo_vlm.evaluate.tasks import TASKS, Example, Prediction, get_task
from flamingo_vlm.evaluate.tasks.episodic import episode_record, read_episodes, write_episodes_file
from flamingo_vlm.video import split_time_fragment

RANKING = ("star", "visdial", "rareact")  # each query ranks its own candidates: tests/evaluate/test_tasks_ranking.py
POOLED = sorted(name for name, spec in TASKS.items() if not spec.episodic and name not in RANKING)
EPISODIC = sorted(name for name, spec in TASKS.items() if spec.episodic and name not in RANKING)


@pytest.mark.parametrize("task", POOLED)
def test_reader_reads_published_layout(task: str, benchmark_writer) -> None:
    spec = get_task(task)
    root = benchmark_writer(task, n_train=6, n_eval=3)
    train, val = spec.reader(root, spec.support_split), spec.reader(root, spec.eval_split)
    assert (len(train.examples), len(val.examples)) == (6, 3)
    assert not train.bad and not val.bad
    for ex in train.examples + val.examples:
        assert len(ex.media) == 1 and Path(split_time_fragment(ex.media[0])[0]).is_file()  # a clip may be cut
        assert ex.answer and ex.references
    if spec.mode == "rank":
        assert val.candidates and all(0 <= ex.label < len(val.candidates) for ex in val.examples)
        assert all(val.candidates[ex.label] == ex.answer for ex in val.examples)
    assert len({ex.id for ex in val.examples}) == 3


@pytest.mark.parametrize("task", EPISODIC)
def test_episodic_reader_gives_each_query_its_support(task: str, benchmark_writer) -> None:
    spec = get_task(task)
    split = spec.reader(benchmark_writer(task, n_eval=3), spec.eval_split)
    assert len(split.examples) == 3 and not split.bad
    for ex in split.examples:
        assert len(ex.support) == 4 and all(Path(s.media[0]).is_file() for s in ex.support)
        assert ex.candidates[ex.label] == ex.answer
        assert ex.fields["kind"] in ("colour", "shape", "size", "position")


@pytest.mark.parametrize("task", EPISODIC)
def test_episodic_score_is_broken_down_by_kind(task: str) -> None:
    def query(kind: str, answer: str) -> Example:
        return Example(id=f"{kind}-{answer}", media=(), fields={"kind": kind}, answer=answer, references=(answer,))

    examples = [query("colour", "dax"), query("colour", "wug"), query("shape", "dax"), query("shape", "fep")]
    predictions = [Prediction(t) for t in ("dax", "wug", "wug", "fep")]  # colour 2/2, shape 1/2
    scores = get_task(task).scorer(examples, predictions, [])
    assert scores == {"top1": 75.0, "top1_colour": 100.0, "top1_shape": 50.0}


def test_episodic_reader_counts_missing_support_images(benchmark_writer) -> None:
    spec = get_task("shapesworld_binding")
    root = benchmark_writer("shapesworld_binding", n_eval=3)
    first = spec.reader(root, "test").examples[0]
    Path(first.support[2].media[0]).unlink()
    split = spec.reader(root, "test")
    assert len(split.examples) == 2 and split.bad == {"missing_media": 1}


def test_read_episodes_rejects_malformed_files(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        read_episodes(tmp_path, "test")
    (tmp_path / "test.json").write_text(json.dumps({"template": "x", "episodes": [{"id": "e"}]}))
    with pytest.raises(ValueError, match="not a ShapesWorld episodes file"):
        read_episodes(tmp_path, "test")


def test_episodes_file_round_trips(tmp_path) -> None:
    support = [("images/s0.png", "dax"), ("images/s1.png", "wug")]
    bindings = {"dax": "red", "wug": "blue"}
    records = [
        episode_record("e0", "colour", support, ("images/q0.png", "wug"), ["dax", "wug"], bindings),
        episode_record("e1", "shape", support[:1], ("images/q1.png", "dax"), ["dax", "zib"]),
    ]
    path = write_episodes_file(tmp_path, "test", "toy", "<image>Output: {answer}<|endofchunk|>", records)
    data = json.loads(path.read_text())
    assert data["candidates"] == ["dax", "wug", "zib"] and "bindings" not in data["episodes"][1]
    template, episodes = read_episodes(tmp_path, "test")
    assert template == "<image>Output: {answer}<|endofchunk|>"
    assert [(e.id, e.kind, e.label(), e.bindings) for e in episodes] == [
        ("e0", "colour", 1, bindings),
        ("e1", "shape", 0, {}),
    ]
    assert episodes[0].support[1].media == (str(tmp_path / "images/s1.png"),) and episodes[0].support[1].answer == "wug"


def test_vqa_reader_fields(benchmark_writer) -> None:
    spec = get_task("vqav2")
    ex = spec.reader(benchmark_writer("vqav2"), "val").examples[1]
    assert ex.fields == {"question": "What colour is the square?"}
    assert ex.answer == "green" and len(ex.references) == 10  # majority answer; all 10 humans kept
    assert ex.media[0].endswith("val2014/COCO_val2014_000000001001.jpg")


def test_imagenet_class_names_and_labels(benchmark_writer) -> None:
    split = get_task("imagenet").reader(benchmark_writer("imagenet"), "val")
    assert split.candidates == ["red thing", "green thing", "blue thing"]


def test_bad_records_are_counted_not_dropped_silently(benchmark_writer) -> None:
    spec = get_task("hateful_memes")
    root = benchmark_writer("hateful_memes", n_eval=4)
    (root / "img" / "dev_seen00001.png").unlink()  # a missing image
    with open(root / "dev_seen.jsonl", "a") as f:
        f.write("{not json\n")
        f.write(json.dumps({"id": "x", "img": "img/dev_seen00000.png", "text": "no label"}) + "\n")
    split = spec.reader(root, "dev_seen")
    assert len(split.examples) == 3
    assert split.bad == {"missing_media": 1, "malformed_record": 2}
    assert split.num_records == 6


def test_missing_annotation_file_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(ValueError, match="v2_OpenEnded_mscoco_val2014_questions.json"):
        get_task("vqav2").reader(tmp_path, "val")
    with pytest.raises(ValueError, match="unknown task"):
        get_task("nope")


LIST_FILES = {  # task -> (annotation file of the eval split, key of its record list; None: the file is the list)
    "vqav2": ("v2_mscoco_val2014_annotations.json", "annotations"),
    "textvqa": ("TextVQA_0.5.1_val.json", "data"),
    "vizwiz": ("Annotations/val.json", None),
    "coco": ("dataset_coco.json", "images"),
    "msrvttqa": ("test_qa.json", None),
}


@pytest.mark.parametrize("task", sorted(LIST_FILES))
def test_unusable_annotation_files_are_value_errors_naming_the_file(task: str, benchmark_writer) -> None:
    """Fuzz campaign: a record list that was null or a number crashed the reader's loop (TypeError), and a
    file that was not UTF-8 gave a UnicodeDecodeError that named no file."""
    spec = get_task(task)
    root = benchmark_writer(task, n_eval=3)
    name, key = LIST_FILES[task]
    path = root / name
    good = path.read_bytes()
    data = json.loads(good)
    for broken in (None, 5, {"a": 1}):
        path.write_text(json.dumps(broken if key is None else {**data, key: broken}))
        with pytest.raises(ValueError, match=f"{path}: expected"):
            spec.reader(root, spec.eval_split)
    path.write_bytes(b"\xff\xfe" + good)
    with pytest.raises(ValueError, match=f"{path} is not UTF-8 text"):
        spec.reader(root, spec.eval_split)


def test_vqa_annotation_with_an_unusable_id_is_counted_not_a_crash(benchmark_writer) -> None:
    """Fuzz campaign: an annotation whose question_id was a list crashed the join (unhashable type)."""
    spec = get_task("vqav2")
    root = benchmark_writer("vqav2", n_eval=3)
    path = root / "v2_mscoco_val2014_annotations.json"
    data = json.loads(path.read_text())
    data["annotations"][0]["question_id"] = [data["annotations"][0]["question_id"]]
    path.write_text(json.dumps(data))
    split = spec.reader(root, "val")
    assert len(split.examples) == 2 and split.bad == {"malformed_record": 1}


@pytest.mark.parametrize("task", ["vqav2", "coco", "msvdqa", "imagenet", "shapesworld_attribute"])
def test_deeply_nested_annotation_file_is_refused_naming_it(task: str, benchmark_writer) -> None:
    """A crafted annotation file is a ValueError naming the file, not a RecursionError from the parser."""
    spec = get_task(task)
    root = benchmark_writer(task)
    files = sorted(p for p in root.glob("*.json") if p.stat().st_size > 2)
    for path in files:
        path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match=r"\.json nests deeper than the parser's limit"):
        spec.reader(root, spec.eval_split)


def test_deeply_nested_jsonl_line_is_a_counted_malformed_record(benchmark_writer) -> None:
    root = benchmark_writer("hateful_memes", n_eval=2)
    with open(root / "dev_seen.jsonl", "a") as f:
        f.write("[" * 100_000 + "]" * 100_000 + "\n")
    split = get_task("hateful_memes").reader(root, "dev_seen")
    assert len(split.examples) == 2 and split.bad == {"malformed_record": 1}


def test_every_paper_benchmark_is_a_task() -> None:
    from flamingo_vlm.evaluate.tasks import PAPER_BENCHMARKS, TASKS

    assert len(set(PAPER_BENCHMARKS)) == 16
    assert set(PAPER_BENCHMARKS) <= set(TASKS)
