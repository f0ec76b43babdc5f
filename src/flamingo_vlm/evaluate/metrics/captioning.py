"""CIDEr and BLEU-4 through ``pycocoevalcap``, exactly as the COCO caption server computes them.

Both predictions and references go through the Stanford PTB tokenizer (Java) first, the step
most re-implementations skip and the main reason their CIDEr differs from published numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def caption_metrics(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]) -> dict[str, float]:
    """Corpus CIDEr(-D) and BLEU-4 of one caption per image against that image's references.

    Keys identify images; both mappings must have the same keys.  Scores are fractions (COCO
    papers report CIDEr x100).
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    if set(predictions) != set(references):
        raise ValueError("predictions and references must cover the same image ids")
    if not predictions:
        raise ValueError("no captions to score")
    if any(len(refs) == 0 for refs in references.values()):
        raise ValueError("every image needs at least one reference caption")
    # pycocoevalcap keys are compared with ==, and its tokenizer accepts any hashable key.
    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({k: [{"caption": c} for c in refs] for k, refs in references.items()})
    res = tokenizer.tokenize({k: [{"caption": c}] for k, c in predictions.items()})
    cider, _ = Cider().compute_score(gts, res)
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    return {"cider": float(cider), "bleu4": float(bleu[3])}
