"""ShapesWorld's STAR, VisDial and RareAct sets are read by the real readers, and say what the clips show."""

from __future__ import annotations

from collections import Counter

import pytest

from flamingo_vlm.evaluate.tasks import get_task
from flamingo_vlm.video import read_video_frames, split_time_fragment
from flamingo_vlm.world.ranking_benchmarks import RANKING_BENCHMARKS, VISDIAL_OPTIONS
from flamingo_vlm.world.scene import RenderConfig


@pytest.fixture(scope="module")
def ranking_world(tmp_path_factory):
    root = tmp_path_factory.mktemp("ranking-world")
    for task, (writer, splits) in RANKING_BENCHMARKS.items():
        sizes = {splits[0]: 8} if len(splits) == 1 else {splits[0]: 8, splits[1]: 5}
        writer(root / task, 3, sizes, RenderConfig(image_size=32))
    return root


def test_star_questions_of_every_type_about_the_moving_segment(ranking_world) -> None:
    split = get_task("star").reader(ranking_world / "star", "val")
    assert len(split.examples) == 8 and not split.bad
    assert Counter(e.fields["type"] for e in split.examples) == {
        t: 2 for t in ("Interaction", "Sequence", "Prediction", "Feasibility")
    }
    example = split.examples[0]
    path, start, end = split_time_fragment(example.media[0])
    assert len(read_video_frames(path)) == end - start + 2  # the segment and one still frame either side
    assert len(read_video_frames(path, start=start, end=end)) == end - start
    assert len(get_task("star").reader(ranking_world / "star", "train").examples) == 5


def test_visdial_rounds_options_and_dense_relevance(ranking_world) -> None:
    split = get_task("visdial").reader(ranking_world / "visdial", "val")
    assert len(split.examples) == 8 and not split.bad
    assert all(
        len(e.candidates) == VISDIAL_OPTIONS and len(set(e.candidates)) == VISDIAL_OPTIONS for e in split.examples
    )
    dense = [e for e in split.examples if e.relevance]
    assert len(dense) == 3  # one round per dialog (3 rounds each: 3 + 3 + 2)
    assert all(e.relevance[e.label] == 1.0 and max(e.relevance) == 1.0 for e in dense)
    second = split.examples[1]
    assert second.fields["history"].count("Question:") == 1 and second.fields["history"].endswith(". ")


def test_rareact_labels_follow_the_clip(ranking_world) -> None:
    split = get_task("rareact").reader(ranking_world / "rareact", "test")
    assert len(split.examples) == 8 and not split.bad
    labels = [int(e.fields["annotation"]) for e in split.examples]
    assert labels[0] == 1 and set(labels) <= {0, 1, 2, 3, 4}
    assert Counter(e.fields["video_id"] for e in split.examples) == {f"rare{i:05d}": 2 for i in range(4)}
    assert all(e.fields["verb"].startswith("move ") for e in split.examples)
