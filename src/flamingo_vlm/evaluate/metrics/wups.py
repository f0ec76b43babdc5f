"""WUPS, the Wu–Palmer-based answer similarity of open-ended video QA (NExT-QA), over WordNet through ``nltk``.

As NExT-QA's official ``metrics.py`` (doc-doc/NExT-OE) computes it for one prediction and one reference:

* ``wup(a, b)`` is 1 for equal words, 0 when either has no WordNet synset, else the Wu–Palmer similarity of
  the two words' **first** synsets (their most frequent senses), down-weighted ×0.1 when below the threshold;
* ``WUPS(A, B) = min(∏_{a∈A} max_{b∈B} wup(a, b), ∏_{b∈B} max_{a∈A} wup(a, b))`` over the two answers'
  words, where a word matching nothing (max 0) is left out of the product, and a side whose every word
  matched nothing scores 0.

WUPS@0.0 applies no down-weighting; WUPS@0.9 scores a word pair below 0.9 similarity a tenth of it.

WordNet comes from disk, never from a download: Debian's ``wordnet-base`` package installs the WordNet 3.0
database under ``/usr/share/wordnet`` (``apt-get install wordnet-base``), and ``FLAMINGO_WORDNET`` or
``root=`` may name another WordNet ``dict/`` directory.  nltk's reader also wants the ``lexnames`` index of
lexicographer files, which Debian does not ship; it is the fixed WordNet 3.0 list (``lexnames(5WN)``), so
it is written next to a copy of the database files (28 MB, once) in a cache directory: nltk refuses symbolic
and hard links that could leave its corpus root.
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

DEBIAN_WORDNET = "/usr/share/wordnet"
_DATABASE_FILES = tuple(
    f"{kind}.{pos}" for kind in ("index", "data") for pos in ("noun", "verb", "adj", "adv")
) + tuple(f"{pos}.exc" for pos in ("noun", "verb", "adj", "adv"))
# lexnames(5WN) of WordNet 3.0: file number, name, syntactic category (1 noun, 2 verb, 3 adj, 4 adv).
_LEXNAMES = (
    ["adj.all 3", "adj.pert 3", "adv.all 4"]
    + [
        f"noun.{n} 1"
        for n in (
            "Tops act animal artifact attribute body cognition communication event feeling food group location "
            "motive object person phenomenon plant possession process quantity relation shape state substance time"
        ).split()
    ]
    + [
        f"verb.{n} 2"
        for n in (
            "body change cognition communication competition consumption contact creation emotion motion "
            "perception possession social stative weather"
        ).split()
    ]
    + ["adj.ppl 3"]
)


def _prepared_root(source: Path, cache: Path) -> Path:
    """``source`` itself when it is a complete nltk WordNet directory, else a cached copy with ``lexnames``."""
    missing = [f for f in _DATABASE_FILES if not (source / f).is_file()]
    if missing:
        raise ValueError(
            f"no WordNet database at {source} (missing {', '.join(missing)}): install it with "
            "`apt-get install wordnet-base`, or set FLAMINGO_WORDNET to a WordNet 3.0 dict/ directory"
        )
    if (source / "lexnames").is_file():
        return source
    cache.mkdir(parents=True, exist_ok=True)
    lexnames = "".join(f"{i:02d}\t{entry.replace(' ', chr(9))}\n" for i, entry in enumerate(_LEXNAMES))
    for name in _DATABASE_FILES + ("lexnames",):
        target = cache / name
        if target.is_file() and target.stat().st_nlink == 1:
            continue
        # Written under a private name, then renamed: processes preparing the cache at once never read half a file.
        partial = cache / f".{name}.{os.getpid()}"
        if name == "lexnames":
            partial.write_text(lexnames)
        else:
            shutil.copyfile(source / name, partial)
        os.replace(partial, target)
    return cache


@lru_cache(maxsize=4)
def load_wordnet(root: str | None = None) -> Any:
    """nltk's ``WordNetCorpusReader`` on a local WordNet (``root``, ``$FLAMINGO_WORDNET`` or Debian's)."""
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    source = Path(root or os.environ.get("FLAMINGO_WORDNET") or DEBIAN_WORDNET).resolve()
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "flamingo_vlm" / "wordnet"
    prepared = _prepared_root(source, cache)
    for allowed in {str(source), str(prepared.resolve())}:  # nltk reads corpora only under nltk.data.path
        if allowed not in nltk.data.path:
            nltk.data.path.append(allowed)

    class EnglishWordNet(WordNetCorpusReader):
        def map_wn(self, version: str = "wordnet") -> None:
            """No mapping to nltk's downloadable ``wordnet``: it only serves the multilingual wordnets."""
            return None

    with warnings.catch_warnings():  # no Open Multilingual Wordnet: English only, as WUPS needs
        warnings.filterwarnings("ignore", message="The multilingual functions")
        return EnglishWordNet(str(prepared), None)


def word_similarity(word1: str, word2: str, threshold: float, wordnet: Any) -> float:
    """Wu–Palmer similarity of the words' first synsets, ×0.1 below ``threshold`` (1 for equal words)."""
    if word1 == word2:
        return 1.0
    synsets1, synsets2 = wordnet.synsets(word1), wordnet.synsets(word2)
    if not synsets1 or not synsets2:
        return 0.0
    similarity = synsets1[0].wup_similarity(synsets2[0]) or 0.0
    return similarity if similarity >= threshold else 0.1 * similarity


def _one_way(words1: Sequence[str], words2: Sequence[str], threshold: float, wordnet: Any) -> float:
    product, matched = 1.0, False
    for w1 in words1:
        best = max((word_similarity(w1, w2, threshold, wordnet) for w2 in words2), default=0.0)
        if best > 0:
            product *= best
            matched = True
    return product if matched else 0.0


def wups(prediction: Sequence[str], reference: Sequence[str], threshold: float, wordnet: Any = None) -> float:
    """WUPS of two tokenised answers at ``threshold`` (0.0 or 0.9 in NExT-QA), a fraction in [0, 1]."""
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"the WUPS threshold must lie in [0, 1], got {threshold}")
    wordnet = wordnet if wordnet is not None else load_wordnet()
    return min(_one_way(prediction, reference, threshold, wordnet), _one_way(reference, prediction, threshold, wordnet))
