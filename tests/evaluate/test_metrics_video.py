"""iVQA accuracy and NExT-QA's WUPS against values computed by hand (WordNet 3.0 for WUPS)."""

from __future__ import annotations

import pytest

from flamingo_vlm.evaluate.metrics.ivqa import ivqa_accuracy
from flamingo_vlm.evaluate.metrics.wups import load_wordnet, word_similarity, wups
from flamingo_vlm.evaluate.tasks.base import Example, Prediction
from flamingo_vlm.evaluate.tasks.ivqa import score_ivqa
from flamingo_vlm.evaluate.tasks.nextqa import content_words, nextqa_scores, score_nextqa


def test_ivqa_accuracy_is_matches_over_two_capped_at_one() -> None:
    humans = ["onion", "carrot", "onion", "onions", "the Carrot."]
    assert ivqa_accuracy("onion", humans) == 1.0  # 2 of 5
    assert ivqa_accuracy("Carrot", humans) == 1.0  # "carrot" and "the Carrot." normalise alike
    assert ivqa_accuracy("onions", humans) == 0.5  # 1 of 5
    assert ivqa_accuracy("pepper", humans) == 0.0
    assert ivqa_accuracy("knife", ["knife"] * 5) == 1.0  # 5 of 5 is still 1
    with pytest.raises(ValueError, match="at least one human answer"):
        ivqa_accuracy("x", [])
    examples = [Example("a", ("v",), references=tuple(humans)), Example("b", ("v",), references=tuple(humans))]
    assert score_ivqa(examples, [Prediction("onions"), Prediction("onion")], []) == {"ivqa_accuracy": 75.0}


@pytest.fixture(scope="module")
def wordnet():
    try:
        return load_wordnet()
    except ValueError as err:  # pragma: no cover - only without Debian's wordnet-base
        pytest.skip(str(err))


def test_wup_of_synonyms_hypernyms_and_siblings(wordnet) -> None:
    # Synonyms: "car" and "automobile" share their first synset, car.n.01.
    assert word_similarity("car", "automobile", 0.9, wordnet) == 1.0
    # Hypernym: dog.n.01 -> domestic_animal.n.01 -> animal.n.01; animal.n.01 is at depth 7 counting the root
    # entity.n.01 as 1, dog.n.01 two steps below it: 2·7 / ((7 + 2) + 7) = 14/16.
    assert word_similarity("dog", "animal", 0.0, wordnet) == pytest.approx(14 / 16)
    # Siblings: dog.n.01 and cat.n.01 meet at carnivore.n.01 (depth 12), each two steps below it:
    # 2·12 / (14 + 14) = 24/28; at threshold 0.9 that falls short, and counts a tenth.
    assert word_similarity("dog", "cat", 0.0, wordnet) == pytest.approx(24 / 28)
    assert word_similarity("dog", "cat", 0.9, wordnet) == pytest.approx(0.1 * 24 / 28)
    assert word_similarity("dog", "qwzx", 0.0, wordnet) == 0.0  # not in WordNet
    assert word_similarity("qwzx", "qwzx", 0.0, wordnet) == 1.0  # equal words, in WordNet or not


def test_wups_of_phrases_takes_the_worse_direction(wordnet) -> None:
    # pred → ref: "dog"↦cat 24/28, "qwzx" matches nothing and is left out; ref → pred: "cat"↦dog 24/28.
    assert wups(["dog", "qwzx"], ["cat"], 0.0, wordnet) == pytest.approx(24 / 28)
    # pred → ref: 1 · 14/16 (animal↦dog); ref → pred: dog↦animal 14/16, car↦car 1: the minimum, 14/16.
    assert wups(["car", "animal"], ["car", "dog"], 0.0, wordnet) == pytest.approx(14 / 16)
    # pred → ref: animal's best is dog (14/16) ⇒ 14/16; ref → pred: dog 14/16 · cat (cat↦animal) …
    cat_animal = word_similarity("cat", "animal", 0.0, wordnet)
    assert wups(["animal"], ["dog", "cat"], 0.0, wordnet) == pytest.approx(min(14 / 16, 14 / 16 * cat_animal))
    assert wups(["qwzx"], ["cat"], 0.0, wordnet) == 0.0  # nothing matches: 0, not the empty product 1
    assert wups([], ["cat"], 0.0, wordnet) == 0.0
    with pytest.raises(ValueError, match="threshold"):
        wups(["a"], ["b"], 1.5, wordnet)


def test_nextqa_scoring_lemmatises_and_matches_counts_exactly(wordnet) -> None:
    assert content_words("The dogs are jumping", wordnet) == ["dog", "jumping"]  # morphy: "jumping" is a noun
    # WUPS types: best over the references ("leap" is the extra reference of NExT-OE's second file).
    assert nextqa_scores("the cat", ["dog"], "TC", wordnet) == pytest.approx((24 / 28, 0.1 * 24 / 28))
    assert nextqa_scores("a dog", ["cat", "dogs"], "CW", wordnet) == (1.0, 1.0)
    # Counting (DC) and binary (DB) questions: exact match only, a near number scores 0.
    assert nextqa_scores("two", ["three"], "DC", wordnet) == (0.0, 0.0)
    assert nextqa_scores("Yes.", ["yes"], "DB", wordnet) == (1.0, 1.0)
    examples = [
        Example("1", ("v",), fields={"question": "q", "type": "TC"}, references=("dog",)),
        Example("2", ("v",), fields={"question": "q", "type": "DC"}, references=("two",)),
    ]
    scores = score_nextqa(examples, [Prediction("cat"), Prediction("two")], [])
    assert scores["wups0"] == pytest.approx(100 * (24 / 28 + 1) / 2)
    assert scores["wups9"] == pytest.approx(100 * (0.1 * 24 / 28 + 1) / 2)


def test_missing_wordnet_names_the_package_to_install(tmp_path) -> None:
    (tmp_path / "data.noun").write_text("")  # a partial database is no database
    with pytest.raises(ValueError, match=r"missing index\.noun.*apt-get install wordnet-base"):
        load_wordnet(str(tmp_path))
