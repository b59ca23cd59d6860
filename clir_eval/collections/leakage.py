"""Leakage guard: distillation bitext must not contain the test queries (or their English originals).

A pair leaks when, after :func:`normalize` (Unicode NFKC, casefold, whitespace collapsed),

* its source sentence equals a test topic in the source language, or
* its target sentence equals a test topic in the target language (the English/oracle counterpart of
  a test query, e.g. the NTREX English sentence or the English XQuAD question).

By default a leak is refused with :class:`LeakageError` (count and first examples). ``allow_leakage``
lets the pairs through with a logged warning; ``drop_leaking`` removes them and reports how many.
"""

from __future__ import annotations

import logging
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable

from clir_eval.collections.records import BitextPair, Topic

if TYPE_CHECKING:
    from clir_eval.collections.registry import Collection

logger = logging.getLogger(__name__)

_EXAMPLES = 3
#: What to do with leaking pairs: refuse them, drop them, or keep them with a warning.
LEAKAGE_POLICIES = ("error", "drop", "allow")


class LeakageError(ValueError):
    """Bitext overlaps test topics and no override was given."""


@dataclass(frozen=True)
class LeakagePair:
    """One leaking pair and why: ``side`` is ``"source"`` or ``"target"``, ``qids`` the test topics it equals."""

    pair: BitextPair
    side: str
    qids: tuple[str, ...]


@dataclass(frozen=True)
class LeakageReport:
    """Outcome of :func:`check_leakage`: the pairs to use, and what overlapped."""

    pairs: tuple[BitextPair, ...]
    leaking: tuple[LeakagePair, ...]
    dropped: int
    num_input: int

    @property
    def num_leaking(self) -> int:
        return len(self.leaking)

    def describe(self) -> str:
        """One paragraph: counts and the first examples."""
        if not self.leaking:
            return f"no overlap between {self.num_input} bitext pairs and the test topics"
        by_side = {side: sum(1 for item in self.leaking if item.side == side) for side in ("source", "target")}
        examples = "; ".join(
            f"{item.pair.pair_id or '?'} {item.side} {getattr(item.pair, item.side)!r} = test {', '.join(item.qids[:3])}"
            for item in self.leaking[:_EXAMPLES]
        )
        return (
            f"{self.num_leaking} of {self.num_input} bitext pairs equal a test topic after NFKC+casefold+whitespace "
            f"normalisation ({by_side['source']} by source, {by_side['target']} by target only): {examples}"
        )


def normalize(text: str) -> str:
    """Comparison key: Unicode NFKC, then casefold, then runs of whitespace as one space, stripped."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def check_leakage(
    bitext: Iterable[BitextPair],
    test_topics: Iterable[Topic],
    *,
    allow_leakage: bool = False,
    drop_leaking: bool = False,
) -> LeakageReport:
    """Compare ``bitext`` with ``test_topics`` (all languages, the oracle English ones included).

    Args:
        bitext: candidate distillation pairs.
        test_topics: every topic of every test split the student will be evaluated on; include the
            oracle-language topics so that target-side (English) overlap is found.
        allow_leakage: keep leaking pairs, with a logged warning.
        drop_leaking: remove leaking pairs (logged with their count).

    Raises:
        LeakageError: pairs leak and neither override is set.
        ValueError: both overrides are set.
    """
    if allow_leakage and drop_leaking:
        raise ValueError("choose one of allow_leakage and drop_leaking")
    index: dict[tuple[str, str], list[str]] = {}
    for topic in test_topics:
        index.setdefault((topic.lang, normalize(topic.text)), []).append(topic.qid)
    pairs = list(bitext)
    leaking: list[LeakagePair] = []
    for pair in pairs:
        for side, lang, text in (("source", pair.source_lang, pair.source), ("target", pair.target_lang, pair.target)):
            qids = index.get((lang, normalize(text)))
            if qids:
                leaking.append(LeakagePair(pair, side, tuple(qids)))
                break
    report = LeakageReport(tuple(pairs), tuple(leaking), 0, len(pairs))
    if not leaking:
        return report
    if drop_leaking:
        leaked = {id(item.pair) for item in leaking}
        kept = tuple(p for p in pairs if id(p) not in leaked)
        report = LeakageReport(kept, tuple(leaking), len(pairs) - len(kept), len(pairs))
        logger.warning("dropped %d leaking bitext pairs: %s", report.dropped, report.describe())
        return report
    if allow_leakage:
        logger.warning("allow_leakage=True, training on test queries: %s", report.describe())
        return report
    raise LeakageError(
        report.describe() + ". Pass drop_leaking=True to remove them, or allow_leakage=True to keep them."
    )


def evaluation_topics(collections: Iterable[Collection], split: str = "test") -> list[Topic]:
    """All topics (every language, oracle included) of ``split`` in each collection that has that split."""
    topics: list[Topic] = []
    for collection in collections:
        if split in collection.splits:
            for lang in collection.languages_in(split):
                topics.extend(collection.topics(lang, split))
    return topics


def drop_test_text(texts: Iterable[str], test_topics: Iterable[Topic], test_documents: Iterable[str]) -> list[str]:
    """``texts`` without those that equal a test topic (any language) or occur in a test document.

    For English text the initial map is fitted on: NTREX topics are sentences of its documents, so a sentence
    of a test document is as much a test query as the topic itself. Comparison after :func:`normalize`;
    a sentence occurs in a document when its normalised form is a substring of the document's.
    """
    topics = {normalize(topic.text) for topic in test_topics}
    # One string with a separator that normalize() never leaves inside a sentence, so a match cannot span two
    # documents.
    documents = "\n".join(normalize(text) for text in test_documents)
    kept, dropped = [], 0
    for text in texts:
        key = normalize(text)
        if key in topics or (key and key in documents):
            dropped += 1
        else:
            kept.append(text)
    if dropped:
        logger.info("dropped %d sentences that are test topics or sentences of test documents", dropped)
    return kept


def test_documents(collections: Iterable[Collection], split: str = "test") -> list[str]:
    """The text (title and contents) of every document judged relevant in ``split`` of each collection."""
    texts: list[str] = []
    for collection in collections:
        if split not in collection.splits:
            continue
        judged = {qrel.docid for qrel in collection.qrels(split) if qrel.relevance > 0}
        texts.extend(f"{doc.title}\n{doc.contents}" for doc in collection.documents() if doc.docid in judged)
    return texts


def guard_bitext(bitext: Iterable[BitextPair], test_topics: Iterable[Topic], policy: str = "error") -> LeakageReport:
    """:func:`check_leakage` under a named policy (``"error"``, ``"drop"`` or ``"allow"``).

    Raises:
        ValueError: an unknown policy.
        LeakageError: pairs leak and the policy is ``"error"``.
    """
    if policy not in LEAKAGE_POLICIES:
        raise ValueError(f"leakage policy must be one of {list(LEAKAGE_POLICIES)}, got {policy!r}")
    return check_leakage(bitext, test_topics, allow_leakage=policy == "allow", drop_leaking=policy == "drop")


def builtin_test_topics() -> list[Topic]:
    """Every test topic of every built-in collection: what any bitext must not contain, whatever the study."""
    from clir_eval.collections.registry import list_collections, load_collection

    return evaluation_topics(load_collection(name, validate=False) for name in list_collections())
