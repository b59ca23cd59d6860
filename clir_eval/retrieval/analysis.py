"""Lucene analyzers by explicit name, shared by the BM25 index and PSQ (so both see the same index terms).

Names:

* ``"en"``: Anserini's default English analyzer (Porter stemming, Lucene's English stopwords): what
  :func:`clir_eval.retrieval.bm25.build_lucene_index` indexes with, and the only analyzer a translated
  English query may be matched with;
* ``"standard"``: Lucene's standard tokenizer and lower-casing, no stemming, no stopwords (languages
  Lucene has no analyzer for: Swahili, Hausa, Yoruba, ...);
* a language code Lucene has an analyzer for (:data:`LUCENE_LANGUAGES`, e.g. ``"de"``, ``"hi"``,
  ``"zh"`` = CJK bigrams): that language's analyzer with its stemmer and stopwords.

Pyserini is imported inside functions; call nothing here before you want the JVM.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

INDEX_ANALYZER = "en"
STANDARD = "standard"
# Languages pyserini.analysis.get_lucene_analyzer maps to a Lucene analyzer (pyserini 1.6.0).
LUCENE_LANGUAGES = (
    "ar", "bn", "da", "de", "es", "fi", "fr", "hi", "hu", "id", "it", "ja", "ko", "nl", "no", "pt", "ru", "te",
    "th", "tr", "zh",
)
ANALYZERS = (INDEX_ANALYZER, STANDARD, *LUCENE_LANGUAGES)


def check_analyzer(name: str) -> str:
    """Return ``name`` if it is a known analyzer name, else raise naming the valid ones."""
    if name not in ANALYZERS:
        raise ValueError(f"unknown analyzer {name!r}; valid: {', '.join(ANALYZERS)}")
    return name


def analyzer_for_language(lang: str) -> str:
    """The analyzer for text in ``lang``: Lucene's own for :data:`LUCENE_LANGUAGES`, else ``"standard"``.

    English maps to ``"en"``. This is a fixed table, not a guess: a language Lucene lacks gets plain
    tokenisation rather than a wrong stemmer.
    """
    if lang == "en":
        return INDEX_ANALYZER
    return lang if lang in LUCENE_LANGUAGES else STANDARD


@lru_cache(maxsize=None)
def java_analyzer(name: str) -> Any:
    """The Lucene ``Analyzer`` object for ``name`` (starts the JVM)."""
    check_analyzer(name)
    from clir_eval.jvm import ensure_jvm

    ensure_jvm()
    from pyserini.analysis import get_lucene_analyzer

    if name == INDEX_ANALYZER:
        return get_lucene_analyzer(language="en", stemming=True, stemmer="porter", stopwords=True)
    if name == STANDARD:
        return get_lucene_analyzer(language="en", stemming=False, stopwords=False)
    return get_lucene_analyzer(language=name)


class TextAnalyzer:
    """``analyze(text) -> list of terms`` with a named Lucene analyzer (one JNI call per text)."""

    def __init__(self, name: str) -> None:
        self.name = check_analyzer(name)
        java = java_analyzer(name)  # starts the JVM before pyserini is imported
        from pyserini.analysis import Analyzer

        self._analyzer = Analyzer(java)

    def analyze(self, text: str) -> list[str]:
        return [str(token) for token in self._analyzer.analyze(text)]
