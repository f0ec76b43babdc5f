"""VQA accuracy, as computed by the official VQA evaluation script (``vqaEval.py``, GT-Vision-Lab/VQA).

Published VQAv2, OK-VQA, TextVQA and VizWiz numbers (and Flamingo's table) come from that script, so
by default (``normalization="official"``) this module reproduces it rule for rule, quirks included:

* Both answers lose ``\n``/``\t`` and surrounding spaces.  Then, **only when the human answers are not
  all identical**, the prediction and every human answer are normalised: punctuation (removed, or turned
  into a space when it glues two words; every mark removed when the text holds a digit-comma-digit
  number such as "1,000"), periods not followed by a digit, lower case, number words to digits,
  articles, and missing apostrophes of contractions.  When the annotators agree, neither side is
  normalised: ``Cat`` against ten ``cat`` scores 0.  The script assumes agreeing annotations are
  already clean, which holds for VQAv2.
* The period strip passes ``re.UNICODE`` where ``re.sub`` expects its *count*: at most 32 periods are
  stripped from an answer.
* The score of an answer is ``min(#humans who gave it / 3, 1)``, averaged over the 10 leave-one-out
  subsets of the 10 human answers.  Each human answer is one annotator (VQAv2's answers carry an
  ``answer_id``), so leaving one out removes exactly that one, even when others gave the same text.

``normalization="normalize_both"`` always normalises both sides.  It is meant for raw-answer sets
(ShapesWorld's, or human answers like "Two" that nobody cleaned), where the official rule would score a
correct "2" against ten raw "Two" as 0; numbers computed this way are not comparable with published ones.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal, get_args

CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's",
    "howd": "how'd", "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll",
    "let's": "let's", "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't", "mustve": "must've",
    "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't",
    "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's", "shouldve": "should've",
    "shouldnt": "shouldn't", "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd", "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've", "therere": "there're",
    "theres": "there's", "theyd": "they'd", "theyd've": "they'd've", "they'dve": "they'd've",
    "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas", "wasnt": "wasn't",
    "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't", "whatll": "what'll",
    "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll",
    "whyre": "why're", "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're",
    "youve": "you've",
}  # fmt: skip
NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip
ARTICLES = frozenset({"a", "an", "the"})
PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")
# The official pattern is "(?!<=\d)(\.)(?!\d)": its first group is a mistyped look-behind that never
# fails, so in effect a period is dropped unless a digit follows it ("3.5" keeps its period).
_PERIOD = re.compile(r"\.(?!\d)")
# ...and it passes re.UNICODE (32) as re.sub's positional *count*: only the first 32 such periods go.
PERIOD_STRIP_COUNT = int(re.UNICODE)
_DIGIT_COMMA_DIGIT = re.compile(r"(\d)(,)(\d)")


def process_punctuation(text: str) -> str:
    """Drop a punctuation mark that touches a space (or any mark, when the text has "1,000"-style
    numbers); otherwise the mark joins two words, so it becomes a space ("black/white")."""
    out = text
    glued_number = _DIGIT_COMMA_DIGIT.search(text) is not None
    for p in PUNCTUATION:
        if p + " " in text or " " + p in text or glued_number:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD.sub("", out, count=PERIOD_STRIP_COUNT)


def process_digits_articles(text: str) -> str:
    """Lower-case, map number words to digits, drop articles, restore contraction apostrophes."""
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    words = [CONTRACTIONS.get(w, w) for w in words if w not in ARTICLES]
    return " ".join(words)


VqaNormalization = Literal["official", "normalize_both"]
VQA_NORMALIZATIONS: tuple[str, ...] = get_args(VqaNormalization)


def _clean_whitespace(answer: str) -> str:
    """What the official script does to every answer before anything else."""
    return answer.replace("\n", " ").replace("\t", " ").strip()


def normalize_vqa_answer(answer: str) -> str:
    """The official answer normalisation (the one applied when the human answers disagree)."""
    return process_digits_articles(process_punctuation(_clean_whitespace(answer)))


def vqa_accuracy(
    prediction: str, human_answers: Sequence[str], *, normalization: VqaNormalization = "official"
) -> float:
    """Accuracy of one predicted answer against the (usually 10) human answers.

    For each leave-one-out subset of the humans, the answer scores ``min(#matches / 3, 1)``; the
    result is the mean over subsets, so 3 matching humans out of 10 give 0.9, not 1.  With
    ``normalization="official"`` the answers are normalised only when the humans disagree (see the
    module docstring); ``"normalize_both"`` always normalises.
    """
    if not human_answers:
        raise ValueError("vqa_accuracy needs at least one human answer")
    if normalization not in VQA_NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {VQA_NORMALIZATIONS}, got {normalization!r}")
    pred, humans = _clean_whitespace(prediction), [_clean_whitespace(a) for a in human_answers]
    if normalization == "normalize_both" or len(set(humans)) > 1:
        pred, humans = normalize_vqa_answer(pred), [normalize_vqa_answer(a) for a in humans]
    matches = [a == pred for a in humans]
    total = sum(matches)
    # Leaving out human i removes its own match (if any) from the count.
    return sum(min(1.0, (total - m) / 3.0) for m in matches) / len(matches)


def mean_vqa_accuracy(
    predictions: Sequence[str],
    human_answers: Sequence[Sequence[str]],
    *,
    normalization: VqaNormalization = "official",
) -> float:
    """Mean per-question VQA accuracy, as a fraction in [0, 1] (the papers report x100)."""
    if len(predictions) != len(human_answers):
        raise ValueError(f"{len(predictions)} predictions for {len(human_answers)} questions")
    if not predictions:
        raise ValueError("no predictions to score")
    scores = [vqa_accuracy(p, a, normalization=normalization) for p, a in zip(predictions, human_answers)]
    return sum(scores) / len(predictions)
