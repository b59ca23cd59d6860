"""Probabilistic structured queries (PSQ): a translation table learned from bitext, used as weighted BM25 queries.

Learning (:func:`learn_translation_table`):

1. the foreign side is analysed with a Lucene analyzer for its language (:mod:`clir_eval.retrieval.analysis`;
   plain tokenisation for languages Lucene lacks), the English side is tokenised without stemming or
   stopword removal, so the aligner sees whole sentences;
2. eflomal (Östling & Tiedemann 2016, a Bayesian HMM+fertility word aligner in C) aligns them; its
   *reverse* links give each foreign token at most one English token;
3. each English token is mapped to its BM25 index term (Porter stem; English stopwords map to nothing),
   and ``p(e | f) = c(f aligned to index term e) / c(f)`` over all occurrences of f. Occurrences aligned to
   NULL or to a stopword keep their share of ``c(f)``, so foreign function words get little weight.

Query translation (:class:`PsqTranslator`): each foreign query term becomes its most probable English
index terms (at most ``max_translations``, until their cumulative probability reaches
``cumulative_threshold``, each at least ``min_probability``), weighted by ``p(e | f)``; terms absent from
the table (never seen in the bitext: names, numbers, rare words) are passed through, analysed as English,
with ``untranslated_weight``. The query is a Lucene
boolean of boosted term queries, scoring ``sum_f sum_e p(e|f) BM25(e, d)`` -- the weighted-query form of
PSQ (Darwish & Oard, SIGIR 2003, who instead fold translations into pseudo term and document frequencies).

eflomal seeds its sampler from ``/dev/urandom`` and has no seed option, so two learnings from the same
bitext differ slightly. Tables are therefore cached (JSON, keyed by the bitext's SHA-256 and every
learning setting) and a run is reproducible from its cached table, whose SHA-256 :meth:`describe` reports.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from clir_eval.collections.records import BitextPair, Topic
from clir_eval.io import atomic_write, build_lock
from clir_eval.retrieval.analysis import INDEX_ANALYZER, STANDARD, TextAnalyzer, analyzer_for_language, check_analyzer
from clir_eval.retrieval.translation.base import TranslatedQuery

logger = logging.getLogger(__name__)

TABLE_FORMAT = "clir-eval-psq-table/1"
ALIGNER_MODELS = {1: "IBM1", 2: "HMM", 3: "HMM+fertility"}
# eflomal refuses sentences longer than 1024 tokens (MAX_SENT_LEN in eflomal.c).
_MAX_TOKENS = 1000


@dataclass(frozen=True)
class PsqTableConfig:
    """How a translation table is learned.

    Attributes:
        source_analyzer: Lucene analyzer for the foreign side (``None``: the language's, see
            :func:`~clir_eval.retrieval.analysis.analyzer_for_language`).
        aligner_model: eflomal model, 1 = IBM1, 2 = HMM, 3 = HMM + fertility (eflomal's default).
        n_samplers: eflomal's independent samplers (more = more stable, slower).
        max_entries: translations kept per foreign term in the stored table.
    """

    source_analyzer: str | None = None
    aligner_model: int = 3
    n_samplers: int = 3
    max_entries: int = 20

    def __post_init__(self) -> None:
        if self.source_analyzer is not None:
            check_analyzer(self.source_analyzer)
        if self.aligner_model not in ALIGNER_MODELS:
            raise ValueError(f"aligner_model must be one of {sorted(ALIGNER_MODELS)} ({ALIGNER_MODELS}), got {self.aligner_model}")
        if self.n_samplers < 1 or self.max_entries < 1:
            raise ValueError("n_samplers and max_entries must be >= 1")


@dataclass(frozen=True)
class PsqConfig:
    """How a foreign query term becomes weighted English index terms."""

    max_translations: int = 5
    cumulative_threshold: float = 0.9
    min_probability: float = 0.01
    untranslated_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.max_translations < 1:
            raise ValueError(f"max_translations must be >= 1, got {self.max_translations}")
        if not 0 < self.cumulative_threshold <= 1:
            raise ValueError(f"cumulative_threshold must be in (0, 1], got {self.cumulative_threshold}")
        if not 0 <= self.min_probability < 1:
            raise ValueError(f"min_probability must be in [0, 1), got {self.min_probability}")
        if self.untranslated_weight < 0:
            raise ValueError(f"untranslated_weight must be >= 0 (0 drops untranslated terms), got {self.untranslated_weight}")


@dataclass(frozen=True)
class TranslationTable:
    """``p(e | f)``: foreign term -> ``((english_index_term, probability), ...)``, most probable first."""

    source_lang: str
    source_analyzer: str
    entries: Mapping[str, tuple[tuple[str, float], ...]]
    provenance: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_analyzer(self.source_analyzer)
        object.__setattr__(self, "entries", MappingProxyType(dict(self.entries)))
        object.__setattr__(self, "provenance", MappingProxyType(dict(self.provenance)))

    def translations(self, term: str) -> tuple[tuple[str, float], ...]:
        """Translations of an analysed foreign term (empty if unseen)."""
        return self.entries.get(term, ())

    def to_json(self) -> dict[str, Any]:
        return {
            "format": TABLE_FORMAT,
            "source_lang": self.source_lang,
            "source_analyzer": self.source_analyzer,
            "target_analyzer": INDEX_ANALYZER,
            "provenance": dict(self.provenance),
            "entries": {f: [[e, p] for e, p in trans] for f, trans in sorted(self.entries.items())},
        }

    def sha256(self) -> str:
        """SHA-256 of the table's canonical JSON (what a run used, whether or not it came from a file)."""
        canonical = json.dumps(self.to_json(), ensure_ascii=False, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def save(self, path: str | os.PathLike) -> None:
        """Write the table as JSON (atomically; sorted keys, so equal tables give equal files)."""
        with atomic_write(path) as handle:
            json.dump(self.to_json(), handle, ensure_ascii=False, sort_keys=True, indent=0)
            handle.write("\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "TranslationTable":
        from clir_eval.io import InputFileError

        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputFileError(path, getattr(exc, "lineno", None), f"not a PSQ table: {exc}") from None
        if not isinstance(data, dict) or data.get("format") != TABLE_FORMAT:
            raise InputFileError(path, None, f"not a PSQ table (format must be {TABLE_FORMAT!r})")
        entries = {f: tuple((str(e), float(p)) for e, p in trans) for f, trans in data["entries"].items()}
        return cls(data["source_lang"], data["source_analyzer"], entries, data.get("provenance", {}))


def bitext_sha256(pairs: Sequence[BitextPair]) -> str:
    """SHA-256 over the pairs' source and target texts, in order (length-prefixed, so unambiguous)."""
    digest = hashlib.sha256()
    for pair in pairs:
        for text in (pair.source, pair.target):
            encoded = text.encode("utf-8")
            digest.update(len(encoded).to_bytes(8, "little"))
            digest.update(encoded)
    return digest.hexdigest()


def psq_cache_dir() -> Path:
    """``<clir-eval cache root>/psq`` (the root of :func:`clir_eval.models.cache.model_cache_dir`)."""
    from clir_eval.models.cache import model_cache_dir

    return model_cache_dir().parent / "psq"


def _align_reverse(sources: list[list[str]], targets: list[list[str]], config: PsqTableConfig) -> list[list[tuple[int, int]]]:
    """eflomal reverse links ``(source_index, target_index)``: each source token has at most one target."""
    import eflomal

    aligner = eflomal.Aligner(model=config.aligner_model, n_samplers=config.n_samplers)
    with tempfile.TemporaryDirectory(prefix="clir-eval-eflomal.") as tmp:
        links_file = Path(tmp) / "reverse.links"
        aligner.align(
            [" ".join(tokens) for tokens in sources],
            [" ".join(tokens) for tokens in targets],
            links_filename_rev=str(links_file),
            quiet=True,
        )
        lines = links_file.read_text(encoding="utf-8").splitlines()
    if len(lines) != len(sources):
        raise RuntimeError(f"eflomal wrote {len(lines)} alignment lines for {len(sources)} sentence pairs")
    links = []
    for line in lines:
        pairs = []
        for link in line.split():
            i, j = link.split("-")
            pairs.append((int(i), int(j)))
        links.append(pairs)
    return links


def learn_translation_table(
    pairs: Sequence[BitextPair],
    source_lang: str | None = None,
    config: PsqTableConfig = PsqTableConfig(),
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
) -> TranslationTable:
    """Learn ``p(e | f)`` from foreign-English bitext with eflomal (see the module docstring).

    Args:
        pairs: sentence pairs, ``source`` foreign, ``target`` English.
        source_lang: the foreign language (default: the pairs' ``source_lang``).
        cache_dir: where tables are cached (default :func:`psq_cache_dir`); the file name is a hash of the
            bitext and every setting, so a changed bitext or setting learns a new table.
    """
    if not pairs:
        raise ValueError("cannot learn a translation table from empty bitext")
    source_lang = source_lang or pairs[0].source_lang
    wrong = {p.target_lang for p in pairs} - {"en"}
    if wrong:
        raise ValueError(f"PSQ needs English targets; bitext has target language(s) {sorted(wrong)}")
    source_analyzer = config.source_analyzer or analyzer_for_language(source_lang)
    import eflomal  # noqa: F401  (fail early, before analysing the bitext, if it is not installed)
    from importlib.metadata import version

    key_data = {
        "format": TABLE_FORMAT,
        "bitext_sha256": bitext_sha256(pairs),
        "source_lang": source_lang,
        "source_analyzer": source_analyzer,
        "target_tokenizer": STANDARD,
        "target_analyzer": INDEX_ANALYZER,
        "aligner": {"name": "eflomal", "version": version("eflomal"), "model": config.aligner_model,
                    "n_samplers": config.n_samplers},
        "max_entries": config.max_entries,
    }
    key = hashlib.sha256(json.dumps(key_data, sort_keys=True).encode()).hexdigest()[:32]
    cache_file = Path(cache_dir or psq_cache_dir()) / f"{source_lang}-en.{key}.json"
    if not use_cache:
        return _learn_table(pairs, source_lang, source_analyzer, config, key_data)
    with build_lock(cache_file):  # a second process learning the same table waits, then reuses it
        if cache_file.is_file():
            logger.info("reusing PSQ table %s", cache_file)
            return TranslationTable.load(cache_file)
        table = _learn_table(pairs, source_lang, source_analyzer, config, key_data)
        table.save(cache_file)
    logger.info("cached PSQ table %s (%d foreign terms)", cache_file, len(table.entries))
    return table


def _learn_table(pairs: Sequence[BitextPair], source_lang: str, source_analyzer: str, config: PsqTableConfig,
                 key_data: dict[str, Any]) -> TranslationTable:
    """Align the bitext and count ``p(e | f)`` (the work :func:`learn_translation_table` caches)."""
    foreign = TextAnalyzer(source_analyzer)
    english = TextAnalyzer(STANDARD)
    to_index = TextAnalyzer(INDEX_ANALYZER)
    sources, targets = [], []
    for pair in pairs:
        f_tokens = foreign.analyze(pair.source)[:_MAX_TOKENS]
        e_tokens = english.analyze(pair.target)[:_MAX_TOKENS]
        if f_tokens and e_tokens:
            sources.append(f_tokens)
            targets.append(e_tokens)
    if not sources:
        raise ValueError("no sentence pair has tokens on both sides")
    logger.info("aligning %d %s-en sentence pairs with eflomal (%s)", len(sources), source_lang,
                ALIGNER_MODELS[config.aligner_model])
    links = _align_reverse(sources, targets, config)

    index_term: dict[str, str | None] = {}
    occurrences: Counter[str] = Counter()
    joint: defaultdict[str, Counter[str]] = defaultdict(Counter)
    for f_tokens, e_tokens, sentence_links in zip(sources, targets, links):
        occurrences.update(f_tokens)
        for i, j in sentence_links:
            token = e_tokens[j]
            if token not in index_term:
                analysed = to_index.analyze(token)
                index_term[token] = analysed[0] if len(analysed) == 1 else None
            term = index_term[token]
            if term is not None:
                joint[f_tokens[i]][term] += 1
    entries = {}
    for f, counts in joint.items():
        total = occurrences[f]
        # Most probable first; equal counts by term, so the table does not depend on dict order.
        ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[: config.max_entries]
        entries[f] = tuple((e, n / total) for e, n in ranked)
    provenance = {**key_data, "num_pairs": len(pairs), "aligned_pairs": len(sources), "source_terms": len(entries)}
    return TranslationTable(source_lang, source_analyzer, entries, provenance)


class PsqTranslator:
    """Topics -> weighted English index terms through a :class:`TranslationTable` (see the module docstring)."""

    def __init__(self, table: TranslationTable, config: PsqConfig = PsqConfig()) -> None:
        self.table = table
        self.config = config

    def term_translations(self, term: str) -> list[tuple[str, float]]:
        """The pruned translations of one analysed foreign term."""
        kept: list[tuple[str, float]] = []
        cumulative = 0.0
        for english, prob in self.table.translations(term):
            if prob < self.config.min_probability or len(kept) == self.config.max_translations:
                break
            kept.append((english, prob))
            cumulative += prob
            if cumulative >= self.config.cumulative_threshold:
                break
        return kept

    def translate(self, topics: list[Topic]) -> list[TranslatedQuery]:
        foreign = TextAnalyzer(self.table.source_analyzer)
        english = TextAnalyzer(INDEX_ANALYZER)
        queries = []
        empty = 0
        for topic in topics:
            if topic.lang != self.table.source_lang:
                raise ValueError(
                    f"topic {topic.qid!r} is in {topic.lang!r}, the PSQ table translates {self.table.source_lang!r}"
                )
            weights: dict[str, float] = defaultdict(float)
            for term in foreign.analyze(topic.text):
                if self.table.translations(term):
                    # A known term whose translations are all pruned (a function word aligned mostly to
                    # NULL or to English stopwords) contributes nothing; it is not "untranslated".
                    for english_term, prob in self.term_translations(term):
                        weights[english_term] += prob
                elif self.config.untranslated_weight > 0:
                    for english_term in english.analyze(term):
                        weights[english_term] += self.config.untranslated_weight
            terms = tuple(sorted(weights.items()))
            empty += not terms
            queries.append(TranslatedQuery(topic.qid, terms=terms))
        if empty:
            logger.warning("PSQ: %d of %d queries have no English term and will retrieve nothing", empty, len(topics))
        return queries

    def describe(self) -> dict[str, Any]:
        return {
            "provider": "psq",
            "config": asdict(self.config),
            "table": {k: v for k, v in self.table.provenance.items()},
            "table_sha256": self.table.sha256(),
        }
