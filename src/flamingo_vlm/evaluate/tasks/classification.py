"""Image classification from an ImageNet-style folder tree: ``{root}/{split}/{class_dir}/{image}``.

Class names (what the model scores) come from ``{root}/classnames.json`` (``{class_dir: name}``)
or ``{root}/classnames.txt`` (one name per line, in sorted ``class_dir`` order); without either,
the directory name is used with underscores as spaces.  Every query is ranked against every class.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from flamingo_vlm.evaluate.metrics.classification import topk_accuracy
from flamingo_vlm.evaluate.tasks.base import Example, Prediction, RecordChecker, Split, read_json

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"})


def class_names(root: Path, class_dirs: Sequence[str]) -> list[str]:
    """Human-readable class names for ``class_dirs`` (sorted), from the name files if present."""
    if (root / "classnames.json").is_file():
        mapping = read_json(root / "classnames.json")
        missing = [d for d in class_dirs if d not in mapping]
        if missing:
            raise ValueError(f"{root / 'classnames.json'} has no name for class directories {missing[:5]}")
        return [str(mapping[d]) for d in class_dirs]
    if (root / "classnames.txt").is_file():
        names = [n.strip() for n in (root / "classnames.txt").read_text(encoding="utf-8").splitlines() if n.strip()]
        if len(names) != len(class_dirs):
            raise ValueError(
                f"{root / 'classnames.txt'} lists {len(names)} names for {len(class_dirs)} class directories"
            )
        return names
    return [d.replace("_", " ") for d in class_dirs]


def read_image_folder(root: Path, split: str) -> Split:
    """One example per image file; the label indexes the split's sorted class directories."""
    split_dir = root / split
    if not split_dir.is_dir():
        raise ValueError(f"expected the image-folder split {split_dir}, which does not exist")
    class_dirs = sorted(d.name for d in split_dir.iterdir() if d.is_dir())
    if not class_dirs:
        raise ValueError(f"{split_dir} has no class directories")
    names = class_names(root, class_dirs)
    checker = RecordChecker(f"{root.name}/{split}")
    for label, (class_dir, name) in enumerate(zip(class_dirs, names)):
        for path in sorted((split_dir / class_dir).iterdir()):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                checker.bad["not_an_image_file"] += 1
                continue
            checker.add(
                lambda p=path, label=label, name=name: Example(
                    id=f"{p.parent.name}/{p.name}", media=(str(p),), answer=name, references=(name,), label=label
                )
            )
    return checker.split(candidates=names)


def score_classification(
    examples: Sequence[Example], predictions: Sequence[Prediction], _: Sequence[str]
) -> dict[str, float]:
    """Top-1 and top-5 accuracy in percent."""
    scores = torch.tensor([p.candidate_logprobs for p in predictions])  # (n, num_classes)
    labels = [e.label for e in examples]
    return {"top1": 100.0 * topk_accuracy(scores, labels, k=1), "top5": 100.0 * topk_accuracy(scores, labels, k=5)}
