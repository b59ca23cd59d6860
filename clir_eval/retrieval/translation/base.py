"""The query-translation interface: foreign topics in, English queries (text or weighted terms) out."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from clir_eval.collections.records import Topic
from clir_eval.io import has_whitespace


@dataclass(frozen=True)
class TranslatedQuery:
    """One English query for BM25: either free ``text`` (analysed by the index analyzer at search time) or
    ``terms``, weighted *index terms* (already analysed, e.g. Porter stems) such as a PSQ translation.

    Exactly one of ``text`` and ``terms`` is set.
    """

    qid: str
    text: str | None = None
    terms: tuple[tuple[str, float], ...] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.qid, str) or not self.qid:
            raise ValueError(f"qid must be a non-empty str, got {self.qid!r}")
        if (self.text is None) == (self.terms is None):
            raise ValueError(f"query {self.qid!r}: set exactly one of text and terms")
        if self.terms is not None:
            terms = tuple((str(term), float(weight)) for term, weight in self.terms)
            for term, weight in terms:
                if not term or has_whitespace(term):
                    raise ValueError(f"query {self.qid!r}: index term {term!r} is empty or contains whitespace")
                if not math.isfinite(weight) or weight <= 0:
                    raise ValueError(f"query {self.qid!r}: term {term!r} has weight {weight}; weights must be > 0")
            object.__setattr__(self, "terms", terms)

    @property
    def is_weighted(self) -> bool:
        return self.terms is not None


@runtime_checkable
class QueryTranslator(Protocol):
    """Anything that turns topics into English queries, one per topic, in input order."""

    def translate(self, topics: list[Topic]) -> list[TranslatedQuery]:
        """Translate ``topics``; the result has the same length and order (``result[i].qid == topics[i].qid``)."""
        ...

    def describe(self) -> dict[str, Any]:
        """What produced the translations (provider kind and its settings), for run provenance."""
        ...
