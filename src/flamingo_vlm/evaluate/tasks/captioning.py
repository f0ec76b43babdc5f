"""Captioning benchmarks (COCO, Flickr30K) from Karpathy-split files.

``dataset_coco.json`` / ``dataset_flickr30k.json`` hold ``{"images": [{filename, split,
sentences: [{raw}], filepath?}]}``; one file covers every split.  As usual, Karpathy's ``restval``
images count as training data.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from flamingo_vlm.evaluate.metrics.captioning import caption_metrics
from flamingo_vlm.evaluate.tasks.base import Example, Prediction, RecordChecker, Split, read_json, record_list


def _caption_example(record: dict, root: Path, images: str) -> Example:
    captions = [s["raw"].strip() for s in record["sentences"]]
    if not captions or not all(captions):
        raise ValueError("image without reference captions")
    image = root / images.format(filepath=record.get("filepath", ""), filename=record["filename"])
    image_id = record.get("cocoid", record.get("imgid", record["filename"]))
    return Example(id=str(image_id), media=(str(image),), answer=captions[0], references=tuple(captions))


def read_karpathy(root: Path, split: str, *, annotations: str, images: str) -> Split:
    """Examples of one Karpathy split; ``images`` is formatted with ``filepath`` and ``filename``."""
    records = record_list(
        read_json(root / annotations), "images", root / annotations, "a Karpathy-split file {'images': [...]}"
    )
    wanted = {"train", "restval"} if split == "train" else {split}
    checker = RecordChecker(f"{root.name}/{split}")
    for record in records:
        if not isinstance(record, dict) or not isinstance(record.get("split"), str):
            checker.bad["malformed_record"] += 1
        elif record["split"] in wanted:
            checker.add(lambda r=record: _caption_example(r, root, images))
    return checker.split()


def score_captions(
    examples: Sequence[Example], predictions: Sequence[Prediction], _: Sequence[str]
) -> dict[str, float]:
    """CIDEr and BLEU-4 in percent."""
    preds = {e.id: p.text for e, p in zip(examples, predictions, strict=True)}
    refs = {e.id: list(e.references) for e in examples}
    return {name: 100.0 * value for name, value in caption_metrics(preds, refs).items()}
