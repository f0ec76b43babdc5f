"""The VATEX, YouCook2, iVQA and NExT-QA readers on fixtures in each benchmark's published layout.

Every fixture holds one malformed record of each kind the reader can meet: it is counted and skipped, while a
file that is unusable as a whole (wrong top-level shape, missing CSV column, unknown split) raises a
``ValueError`` naming the problem.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from flamingo_vlm.evaluate.tasks import get_task
from flamingo_vlm.evaluate.tasks.ivqa import read_ivqa
from flamingo_vlm.evaluate.tasks.nextqa import read_nextqa
from flamingo_vlm.evaluate.tasks.vatex import parse_video_id, read_vatex
from flamingo_vlm.evaluate.tasks.youcook2 import read_youcook2
from flamingo_vlm.video import read_video_frames, split_time_fragment, write_video


def _video(path: Path, seconds: int = 3) -> None:
    """A 1-FPS clip whose frame t has grey level 40·t, so a cut segment's frames tell where it started."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_video([np.full((16, 16, 3), 40 * t, dtype=np.uint8) for t in range(seconds)], path, fps=1.0)


def _csv(path: Path, header: list[str], rows: list[list[object]]) -> None:
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows([header, *rows])


# ------------------------------------------------------------------------------------------------ VATEX


def test_vatex_reads_clips_and_cuts_whole_videos(tmp_path) -> None:
    _video(tmp_path / "videos" / "abc_000000_000003.mp4")  # downloaded as the cut clip
    _video(tmp_path / "videos" / "x_y-Z.mp4", seconds=6)  # downloaded whole: the reader cuts 2..5
    captions = [f"a person does thing {k}" for k in range(10)]
    records = [
        {"videoID": "abc_000000_000003", "enCap": captions, "chCap": ["中文"] * 10},
        {"videoID": "x_y-Z_000002_000005", "enCap": captions},
        {"videoID": "abc_000000_000003", "enCap": []},  # no captions
        {"videoID": "abc_000000_000003", "enCap": ["ok", " "]},  # an empty caption
        {"enCap": captions},  # no videoID
        {"videoID": "notimed", "enCap": captions},  # no time window and no clip file
        {"videoID": "gone_000000_000010", "enCap": captions},  # well-formed, video not downloaded
    ]
    (tmp_path / "vatex_public_test_english_v1.1.json").write_text(json.dumps(records))
    split = read_vatex(tmp_path, "public_test")
    assert [e.id for e in split.examples] == ["abc_000000_000003", "x_y-Z_000002_000005"]
    assert split.bad == {"malformed_record": 4, "missing_media": 1}
    clip, whole = (e.media[0] for e in split.examples)
    assert clip.endswith("videos/abc_000000_000003.mp4") and whole.endswith("videos/x_y-Z.mp4#t=2,5")
    assert split.examples[0].references == tuple(captions) and split.examples[0].answer == captions[0]
    path, start, end = split_time_fragment(whole)
    levels = [int(np.asarray(f).mean()) for f in read_video_frames(path, start=start, end=end)]
    assert len(levels) == 3 and abs(levels[0] - 80) < 8  # seconds 2, 3, 4 of the whole video


def test_vatex_rejects_unknown_splits_and_bad_files(tmp_path) -> None:
    with pytest.raises(ValueError, match="no split 'test'"):
        read_vatex(tmp_path, "test")
    (tmp_path / "vatex_training_v1.0.json").write_text(json.dumps({"videoID": "a"}))
    with pytest.raises(ValueError, match="videoID"):
        read_vatex(tmp_path, "train")
    assert parse_video_id("a_b_c_000010_000020") == ("a_b_c", 10, 20)
    with pytest.raises(ValueError, match="start < end"):
        parse_video_id("abc_000020_000010")


# ------------------------------------------------------------------------------------------------ YouCook2


def test_youcook2_reads_segments_of_its_subset(tmp_path) -> None:
    _video(tmp_path / "raw_videos" / "validation" / "113" / "vidA.mp4", seconds=6)
    _video(tmp_path / "raw_videos" / "validation" / "201" / "vidB.mkv", seconds=4)  # YouTube's other containers
    _video(tmp_path / "raw_videos" / "training" / "113" / "vidT.mp4")
    database = {
        "vidA": {
            "duration": 6.0,
            "subset": "validation",
            "recipe_type": "113",
            "video_url": "https://www.youtube.com/watch?v=vidA",
            "annotations": [
                {"segment": [0, 2], "id": 0, "sentence": "spread butter on the bread"},
                {"segment": [3, 6], "id": 1, "sentence": "put the slices together"},
                {"segment": [4, 4], "id": 2, "sentence": "empty segment"},  # end must follow start
                {"segment": [1, 2], "id": 3, "sentence": ""},  # no sentence
                {"id": 4, "sentence": "no segment"},
            ],
        },
        "vidB": {
            "subset": "validation",
            "recipe_type": 201,
            "annotations": [{"segment": [1, 3], "id": 0, "sentence": "stir"}],
        },
        "vidT": {
            "subset": "training",
            "recipe_type": "113",
            "annotations": [{"segment": [0, 1], "id": 0, "sentence": "cut"}],
        },
        "vidC": {
            "subset": "validation",
            "recipe_type": "113",
            "annotations": [{"segment": [0, 1], "id": 0, "sentence": "x"}],
        },
        "bad": {"subset": "validation"},  # an entry without annotations
    }
    (tmp_path / "youcookii_annotations_trainval.json").write_text(json.dumps({"database": database}))
    split = read_youcook2(tmp_path, "val")
    assert [e.id for e in split.examples] == ["vidA_0", "vidA_1", "vidB_0"]
    assert [e.media[0].rsplit("/", 1)[1] for e in split.examples] == [
        "vidA.mp4#t=0,2",
        "vidA.mp4#t=3,6",
        "vidB.mkv#t=1,3",
    ]
    assert split.examples[1].references == ("put the slices together",)
    assert split.bad == {"malformed_record": 4, "missing_media": 1}
    assert [e.id for e in read_youcook2(tmp_path, "train").examples] == ["vidT_0"]
    with pytest.raises(ValueError, match="no annotated split 'test'"):
        read_youcook2(tmp_path, "test")
    (tmp_path / "youcookii_annotations_trainval.json").write_text(json.dumps([database]))
    with pytest.raises(ValueError, match="database"):
        read_youcook2(tmp_path, "val")


# ------------------------------------------------------------------------------------------------ iVQA


def test_ivqa_reads_questions_with_five_answers(tmp_path) -> None:
    _video(tmp_path / "video" / "v1.mp4", seconds=5)
    _video(tmp_path / "video" / "v2.mp4")
    header = ["video_id", "start", "end", "question", "answer1", "answer2", "answer3", "answer4", "answer5"]
    rows = [
        ["v1", 1, 4, "what is cut?", "onion", "carrot", "onion", "onions", "carrot"],
        ["v2", "", "", "what tool?", "knife", "knife", "knife", "knife", "knife"],  # no bounds: whole file
        ["v1", 4, 2, "backwards?", "a", "a", "a", "a", "a"],  # end before start
        ["v1", 0, 1, "missing answer?", "a", "a", "", "a", "a"],
        ["v1", "soon", 3, "bad start?", "a", "a", "a", "a", "a"],
        ["v9", 0, 1, "no such video?", "a", "a", "a", "a", "a"],
    ]
    _csv(tmp_path / "test.csv", header, rows)
    split = read_ivqa(tmp_path, "test")
    first, second = split.examples
    assert first.media[0].endswith("video/v1.mp4#t=1,4") and second.media[0].endswith("video/v2.mp4")
    assert first.references == ("onion", "carrot", "onion", "onions", "carrot")
    assert first.answer == "onion"  # the most common answer, first annotator's on a tie
    assert first.fields == {"question": "what is cut?"}
    assert split.bad == {"malformed_record": 3, "missing_media": 1}
    _csv(tmp_path / "train.csv", header[:-1], rows)
    with pytest.raises(ValueError, match="missing column.*answer5"):
        read_ivqa(tmp_path, "train")


# ------------------------------------------------------------------------------------------------ NExT-QA


def test_nextqa_reads_open_ended_csv_with_video_map_and_extra_references(tmp_path) -> None:
    _video(tmp_path / "NExTVideo" / "0001" / "111.mp4")
    _video(tmp_path / "NExTVideo" / "222.mp4")  # not in the map: NExTVideo/{video}.mp4
    header = ["video", "frame_count", "width", "height", "question", "answer", "qid", "type"]
    rows = [
        [111, 90, 640, 480, "what does the dog do", "jump", 3, "TC"],
        [222, 90, 640, 480, "how many people are there", "two", 0, "DC"],
        [111, 90, 640, 480, "", "x", 4, "CW"],  # empty question
        [111, 90, 640, 480, "why", "because", 5],  # short row: no type
        [333, 90, 640, 480, "where is this", "park", 1, "DL"],  # mapped video not downloaded
    ]
    _csv(tmp_path / "test.csv", header, rows)
    (tmp_path / "map_vid_vidorID.json").write_text(json.dumps({"111": "0001/111", "333": "0002/333"}))
    (tmp_path / "add_reference_answer_test.json").write_text(json.dumps({"111": {"3": "leap"}}))
    split = read_nextqa(tmp_path, "test")
    first, second = split.examples
    assert first.id == "111_3" and first.media[0].endswith("NExTVideo/0001/111.mp4")
    assert first.references == ("jump", "leap") and first.fields == {"question": "what does the dog do", "type": "TC"}
    assert second.media[0].endswith("NExTVideo/222.mp4") and second.references == ("two",)
    assert split.bad == {"malformed_record": 2, "missing_media": 1}
    _csv(tmp_path / "val.csv", ["video", "question", "answer", "qid"], [])
    with pytest.raises(ValueError, match="missing column.*type"):
        read_nextqa(tmp_path, "val")


@pytest.mark.parametrize("task", ["vatex", "youcook2", "ivqa", "nextqa"])
def test_shapesworld_sets_read_cleanly_and_cut_the_annotated_clip(task, tmp_path) -> None:
    """The world's sets load with nothing skipped, and a segment's first frame is its own clip's first frame."""
    from flamingo_vlm.world.scene import RenderConfig
    from flamingo_vlm.world.video_benchmarks import VIDEO_BENCHMARKS

    writer, splits = VIDEO_BENCHMARKS[task]
    writer(tmp_path, 3, {splits[0]: 3, splits[1]: 4}, RenderConfig(image_size=24))
    spec = get_task(task)
    for name, size in zip(splits, (3, 4)):
        split = spec.reader(tmp_path, name)
        assert not split.bad and (len(split.examples) == size)
        for example in split.examples:
            path, start, end = split_time_fragment(example.media[0])
            frames = read_video_frames(path, start=start, end=end)
            assert 3 <= len(frames) <= 5  # one clip of 3–5 seconds, never its lead-in or neighbours
