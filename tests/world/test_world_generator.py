"""The generator: deterministic from its seed, and what it says about a picture is true of it."""

from __future__ import annotations

import hashlib
import json
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest

from flamingo_vlm.world.language import (
    NUMBER_WORDS,
    QUESTION_KINDS,
    ask,
    captions,
    invented_words,
    statement,
)
from flamingo_vlm.world.motion import DIRECTIONS, random_clip, render_clip
from flamingo_vlm.world.scene import COLOURS, RADIUS, RenderConfig, Scene, Shape, random_scene, render_scene
from flamingo_vlm.world.seeding import stream
from flamingo_vlm.world.text import TEXT_KINDS, TextMix, text_binding_probes, text_corpus

CONFIG = RenderConfig()


def _tar_members(path: Path, root: Path) -> dict[str, bytes]:
    """A shard's members; the page path a web document records is made relative to its world."""
    with tarfile.open(path) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    return {k: v.replace(str(root).encode(), b"ROOT") if k.endswith(".json") else v for k, v in members.items()}


def _digest(root: Path) -> dict[str, str]:
    """Content hash of every file of a world; web shards by member content (their tar headers hold a time)."""
    out = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = str(path.relative_to(root))
        if rel.startswith("train/web/"):
            data = json.dumps({k: hashlib.sha1(v).hexdigest() for k, v in _tar_members(path, root).items()}).encode()
        else:
            data = path.read_bytes()
        out[rel] = hashlib.sha1(data).hexdigest()
    return out


def test_same_seed_gives_identical_files(world, world_again):
    a, b = _digest(world), _digest(world_again)
    assert a.keys() == b.keys() and len(a) > 100
    assert a == b
    # pair and video shards are byte-identical tar files, not only equal in content
    for rel in a:
        if rel.startswith(("train/pairs/", "train/videos/")):
            assert (world / rel).read_bytes() == (world_again / rel).read_bytes()


def test_other_seed_gives_other_files(world, other_world):
    a, b = _digest(world), _digest(other_world)
    shared = [rel for rel in a.keys() & b.keys() if rel != "world.json"]
    assert shared and all(a[rel] != b[rel] for rel in shared if not rel.endswith("classnames.json"))


def test_eval_sets_come_from_another_seed_than_training(world):
    manifest = json.loads((world / "world.json").read_text())
    assert manifest["seed"] == 0 and manifest["eval_seed"] == 1
    with tarfile.open(world / "train/pairs/pairs-000000.tar") as tar:
        train_images = {hashlib.sha1(tar.extractfile(m).read()).hexdigest() for m in tar if m.name.endswith(".jpg")}
    eval_images = {hashlib.sha1(p.read_bytes()).hexdigest() for p in (world / "eval").rglob("*.jpg")}
    assert train_images and eval_images and not train_images & eval_images


def test_streams_are_independent_and_stable():
    assert stream(3, "train", "pairs").random() == stream(3, "train", "pairs").random()
    assert stream(3, "train", "pairs").random() != stream(3, "eval", "pairs").random()


@pytest.mark.parametrize("image_size", [32, 64, 96])
def test_rendered_colours_and_positions_match_the_scene(image_size):
    config = RenderConfig(image_size=image_size, striped_prob=0.0)
    rng = stream(0, "test", "render")
    for _ in range(20):
        scene = random_scene(rng, config)
        image = np.asarray(render_scene(scene, config), dtype=np.float32)  # (h, w, c)
        assert image.shape == (image_size, image_size, 3)
        for shape in scene.shapes:
            y, x = int(shape.y * image_size), int(shape.x * image_size)
            centre = image[max(y - 1, 0) : y + 2, max(x - 1, 0) : x + 2].reshape(-1, 3).mean(0)
            nearest = min(COLOURS, key=lambda c: np.abs(np.array(COLOURS[c]) - centre).sum())
            assert nearest == shape.colour
            # the whole shape lies inside its grid cell, so the named position is the visible one
            r = RADIUS[shape.size]
            row, col = shape.cell
            assert col / 3 <= shape.x - r and shape.x + r <= (col + 1) / 3
            assert row / 3 <= shape.y - r and shape.y + r <= (row + 1) / 3
        assert len({s.cell for s in scene.shapes}) == len(scene.shapes)


def test_render_config_rejects_bad_values():
    with pytest.raises(ValueError, match="image_size"):
        RenderConfig(image_size=8)
    with pytest.raises(ValueError, match="striped_prob"):
        RenderConfig(striped_prob=2.0)


def test_questions_are_answered_by_the_scene():
    rng = stream(0, "test", "questions")
    seen = set()
    for _ in range(200):
        scene = random_scene(rng, CONFIG)
        for kind in QUESTION_KINDS:
            q = ask(scene, kind, rng)
            if q is None:
                continue
            seen.add(kind)
            if q.kind == "count":
                m = re.match(r"How many (\w+ )?shapes", q.question)
                colour = (m.group(1) or "").strip()
                assert int(q.answer) == sum(not colour or s.colour == colour for s in scene.shapes)
            elif q.kind == "existence":
                colour, shape = re.match(r"Is there an? (\w+) (\w+)\?", q.question).groups()
                present = any((s.colour, s.shape) == (colour, shape) for s in scene.shapes)
                assert q.answer == ("yes" if present else "no")
            elif q.kind == "colour" and q.question != "What color is the shape?":
                shape = re.match(r"What color is the (\w+)\?", q.question).group(1)
                assert [s.colour for s in scene.shapes if s.shape == shape] == [q.answer]
            elif q.kind == "position":
                colour, shape = re.match(r"Where is the (\w+) (\w+)\?", q.question).groups()
                assert [s.position for s in scene.shapes if (s.colour, s.shape) == (colour, shape)] == [q.answer]
    assert seen == set(QUESTION_KINDS)


def test_count_statements_are_true_exactly_when_labelled_true():
    rng = stream(0, "test", "statements")
    for _ in range(300):
        scene = random_scene(rng, CONFIG, max_shapes=3)
        truth = rng.random() < 0.5
        text = statement(scene, truth, rng)
        if m := re.match(r"there (?:is|are) (\w+) shapes?$", text):
            assert (NUMBER_WORDS.index(m.group(1)) == len(scene.shapes)) == truth
        elif m := re.match(r"the (\w+) is (\w+)$", text):
            assert ([s.colour for s in scene.shapes if s.shape == m.group(1)] == [m.group(2)]) == truth


def test_captions_use_distinct_phrasings_of_the_same_content():
    scene = Scene((Shape("circle", "red", "small", 0.2, 0.2), Shape("square", "blue", "large", 0.8, 0.8)), 50, 0)
    texts = captions(scene, 5, stream(0, "test", "captions"))
    assert len(set(texts)) == 5
    assert all("red circle" in t and "blue square" in t for t in texts)


def test_clip_moves_its_shape_in_the_stated_direction():
    rng = stream(0, "test", "clips")
    for _ in range(12):
        clip = random_clip(rng, CONFIG)
        frames = render_clip(clip, CONFIG)
        assert 4 <= len(frames) == clip.num_frames <= 8
        target = np.array(COLOURS[clip.mover.colour], dtype=np.float32)
        centroids = []
        for frame in frames:
            pixels = np.asarray(frame, dtype=np.float32)  # (h, w, c)
            mask = np.abs(pixels - target).sum(-1) < 60
            if len(clip.scene.shapes) > 1:  # ignore the still distractor's cell
                d = clip.scene.shapes[1]
                y0, x0 = int(d.y * 64), int(d.x * 64)
                mask[max(y0 - 12, 0) : y0 + 12, max(x0 - 12, 0) : x0 + 12] = False
            ys, xs = np.nonzero(mask)
            centroids.append((xs.mean(), ys.mean()))
        (x0, y0), (x1, y1) = centroids[0], centroids[-1]
        dx, dy = DIRECTIONS[clip.direction]
        assert dx * (x1 - x0) + dy * (y1 - y0) > 10  # pixels along the stated direction


def test_invented_words_are_new():
    words = invented_words(stream(0, "test", "words"), 200)
    assert len(set(words)) == 200 and not set(words) & {*COLOURS, "circle", "yes", "no"}


def test_text_corpus_is_deterministic_and_mixes_every_kind():
    docs = text_corpus(0, 300)
    assert docs == text_corpus(0, 300) and docs != text_corpus(1, 300)
    assert any("Question:" in d for d in docs) and any("hateful" in d for d in docs)
    assert any("Which direction" in d or "going?" in d for d in docs)  # motion, asked about as in video QA
    repeated = [d.split("\n") for d in docs if "\n" in d]
    assert any(len(lines) > 1 and len(set(lines)) == 1 for lines in repeated)  # induction sequences
    only_binding = text_corpus(0, 20, TextMix(**{k: float(k == "binding") for k in TEXT_KINDS}))
    assert all(re.search(r"\b(\w+) is \w+\.|: \w+", d) for d in only_binding)


def test_text_binding_probes_are_balanced_and_answerable():
    probes = text_binding_probes(0, 50)
    assert probes == text_binding_probes(0, 50)
    for p in probes:
        lines = p.prompt.split("\n")
        key = lines[-1].rstrip(":").split(" ")[-1].rstrip(",")  # the bound attribute word
        support = [line.rsplit(": ", 1) for line in lines[:-1]]
        assert len(support) == 8 and {w for _, w in support} == set(p.candidates)
        assert sum(w == p.candidates[0] for _, w in support) == 4
        # the word shown with the query's key in the support examples is the answer
        assert {w for d, w in support if d.split(" ")[-1].rstrip(",") == key} == {p.answer}
    assert 15 < sum(p.answer == p.candidates[0] for p in probes) < 35
