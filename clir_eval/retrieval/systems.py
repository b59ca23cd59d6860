"""Retrieval systems by name: the one place that maps a system spec to the run it produces.

A spec is ``kind`` or ``kind:argument``; kinds are the explicit registry :data:`SYSTEM_KINDS` (never
matched by substring):

========================  =====================================================================
``bm25-psq``              BM25 with probabilistic structured queries from a bitext translation table
``bm25-oracle``           BM25 with the collection's human English topics (upper bound)
``bm25-translated:<tsv>`` BM25 with the user's translations (``qid<TAB>english``)
``bm25-mt:<model>``       BM25 with a Hugging Face seq2seq MT model (id or directory)
``teacher``               the teacher encodes the foreign query (zero-shot) against its own index
``student:<path>``        a distilled student query encoder against the teacher's index
``me5-small``             multilingual-e5-small over its own index (``query:``/``passage:`` prefixes)
``oracle-dense``          the teacher on the human English topic (upper bound)
``hybrid``                fusion of a BM25 and a dense system (:class:`~clir_eval.retrieval.fusion.FusionConfig`)
========================  =====================================================================

The experiment runner calls :func:`run_system` with explicit index directories (:class:`IndexDirs`) so that
each expensive step (Lucene index, dense index per encoder, PSQ table per language) is built once and
reused: every builder records what it was built from and rebuilds only when that changes.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from clir_eval.collections.leakage import LEAKAGE_POLICIES
from clir_eval.collections.records import Topic
from clir_eval.retrieval.bm25 import Bm25Config
from clir_eval.retrieval.dense import DenseIndexConfig
from clir_eval.retrieval.fusion import FusionConfig
from clir_eval.retrieval.translation.psq import PsqConfig, PsqTableConfig
from clir_eval.retrieval.translation.seq2seq import Seq2SeqConfig

if TYPE_CHECKING:
    from clir_eval.collections.records import BitextPair
    from clir_eval.collections.registry import Collection
    from clir_eval.retrieval.translation.base import TranslatedQuery

logger = logging.getLogger(__name__)

#: ``{qid: [(docid, score), ...]}`` best first.
Hits = dict[str, list[tuple[str, float]]]


@dataclass(frozen=True)
class SystemKind:
    """One entry of the registry: its family, whether it takes an argument after ``:``, and what builds it.

    Attributes:
        translator: a BM25 kind's ``(spec, collection, lang, split, indexes, options) -> QueryTranslator``.
        models: a dense kind's ``(spec, options) -> (document encoder, query encoder)``.
    """

    family: str  # "bm25" | "dense" | "fusion"
    argument: str | None  # what the argument is ("path of a student", ...); None = takes none
    description: str
    upper_bound: bool = False  # reads the human English topics: a reference, never a contender
    translator: Callable[..., Any] | None = None
    models: Callable[["SystemSpec", "SystemOptions"], tuple[str, str]] | None = None


def _psq_translator(spec, collection, lang, split, indexes, options):
    from clir_eval.retrieval.translation.psq import PsqTranslator, learn_translation_table

    pairs = psq_bitext(collection, lang, split, options)
    table = learn_translation_table(pairs, source_lang=lang, config=options.psq_table, cache_dir=indexes.psq)
    return PsqTranslator(table, options.psq)


def _oracle_translator(spec, collection, lang, split, indexes, options):
    from clir_eval.retrieval.translation.provided import OracleTranslator

    return OracleTranslator(_oracle_topics(collection, split))


def _file_translator(spec, collection, lang, split, indexes, options):
    from clir_eval.retrieval.translation.provided import FileTranslator

    return FileTranslator(spec.argument)


def _mt_translator(spec, collection, lang, split, indexes, options):
    from clir_eval.retrieval.translation.seq2seq import Seq2SeqTranslator

    return Seq2SeqTranslator(spec.argument, options.mt)


def _teacher_models(spec, options):
    return options.teacher, options.teacher


def _student_models(spec, options):
    return options.teacher, spec.argument


def _me5_models(spec, options):
    return "me5-small", "me5-small"


SYSTEM_KINDS: dict[str, SystemKind] = {
    "bm25-psq": SystemKind("bm25", None, "BM25, PSQ translation table learned from bitext",
                           translator=_psq_translator),
    "bm25-oracle": SystemKind("bm25", None, "BM25, human English topics (upper bound)", upper_bound=True,
                              translator=_oracle_translator),
    "bm25-translated": SystemKind("bm25", "TSV file qid<TAB>english", "BM25, user-supplied translations",
                                  translator=_file_translator),
    "bm25-mt": SystemKind("bm25", "HF seq2seq model id or directory", "BM25, machine-translated topics",
                          translator=_mt_translator),
    "teacher": SystemKind("dense", None, "teacher encodes the foreign query (zero-shot)", models=_teacher_models),
    "student": SystemKind("dense", "student model directory", "distilled student against the teacher's index",
                          models=_student_models),
    "me5-small": SystemKind("dense", None, "multilingual-e5-small over its own index", models=_me5_models),
    "oracle-dense": SystemKind("dense", None, "teacher on the human English topic (upper bound)",
                               upper_bound=True, models=_teacher_models),
    "hybrid": SystemKind("fusion", None, "fusion of a BM25 and a dense system"),
}

#: Bitext tried for ``bm25-psq``, in order: the first ``(source, split)`` that has the language is used.
DEFAULT_PSQ_BITEXT: tuple[tuple[str, str], ...] = (("lafand", "train"), ("ntrex", "dev"))

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class SystemSpec:
    """A parsed system spec: ``kind`` from :data:`SYSTEM_KINDS` and its argument (if the kind takes one)."""

    kind: str
    argument: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in SYSTEM_KINDS:
            raise ValueError(f"unknown system {self.kind!r}; valid: {', '.join(SYSTEM_KINDS)}")
        wants = SYSTEM_KINDS[self.kind].argument
        if wants is None and self.argument is not None:
            raise ValueError(f"system {self.kind!r} takes no argument, got {self.kind}:{self.argument}")
        if wants is not None and not self.argument:
            raise ValueError(f"system {self.kind!r} needs an argument: {self.kind}:<{wants}>")

    @classmethod
    def parse(cls, spec: str) -> "SystemSpec":
        """``"student:runs/kd-sw"`` -> ``SystemSpec("student", "runs/kd-sw")`` (split at the first ``:``)."""
        kind, colon, argument = spec.strip().partition(":")
        return cls(kind, argument if colon else None)

    @property
    def family(self) -> str:
        return SYSTEM_KINDS[self.kind].family

    @property
    def upper_bound(self) -> bool:
        """True for the oracles (English topics): shown for reference, never the best system."""
        return SYSTEM_KINDS[self.kind].upper_bound

    @property
    def name(self) -> str:
        """A file- and tag-safe system name: the kind, plus the argument's last path part if any
        (``student:out/kd-sw`` -> ``student-kd-sw``; ``bm25-translated:nllb.tsv`` -> ``bm25-translated-nllb``)."""
        if self.argument is None:
            return self.kind
        path = Path(self.argument.rstrip("/"))
        stem = path.stem if path.suffix in (".tsv", ".txt", ".gz") else path.name
        return f"{self.kind}-{_UNSAFE.sub('_', stem).strip('_') or 'x'}"

    def __str__(self) -> str:
        return self.kind if self.argument is None else f"{self.kind}:{self.argument}"


def parse_system(spec: str | SystemSpec) -> SystemSpec:
    """A :class:`SystemSpec` from a string (errors list the valid kinds)."""
    return spec if isinstance(spec, SystemSpec) else SystemSpec.parse(spec)


def system_name(spec: str | SystemSpec) -> str:
    """The default run tag and file stem of a system (see :attr:`SystemSpec.name`)."""
    return parse_system(spec).name


def _slug(model: str) -> str:
    """Directory name for a model's dense index: a built-in name as is, a path as its name + hash."""
    from clir_eval.models.registry import BUILTIN_MODELS

    if model in BUILTIN_MODELS:
        return model
    import hashlib

    # A local directory by its absolute path (the same from any working directory), a hub id as written.
    where = str(Path(model).resolve()) if Path(model).exists() else model
    digest = hashlib.sha256(where.encode()).hexdigest()[:10]
    return f"{_UNSAFE.sub('_', Path(model).name) or 'model'}-{digest}"


@dataclass(frozen=True)
class IndexDirs:
    """Where one collection's reusable artefacts live.

    Attributes:
        lucene: the Lucene (BM25) index directory.
        dense: parent of the dense indexes, one sub-directory per document encoder (:meth:`dense_for`).
        psq: cache directory of PSQ translation tables.
    """

    lucene: Path
    dense: Path
    psq: Path

    def __post_init__(self) -> None:
        for name in ("lucene", "dense", "psq"):
            object.__setattr__(self, name, Path(getattr(self, name)))

    @classmethod
    def under(cls, root: str | os.PathLike) -> "IndexDirs":
        """``root/lucene``, ``root/dense/<model>``, ``root/psq``."""
        root = Path(root)
        return cls(lucene=root / "lucene", dense=root / "dense", psq=root / "psq")

    def dense_for(self, model: str, config: DenseIndexConfig | None = None) -> Path:
        """The dense index directory of a document encoder. An index other than flat has its own, named by its
        factory string, so that switching between flat and a compressed index rebuilds neither."""
        factory = "Flat" if config is None else config.factory_string
        if factory == "Flat":
            return self.dense / _slug(model)
        return self.dense / f"{_slug(model)}-{re.sub(r'[^A-Za-z0-9]+', '_', factory).strip('_')}"


@dataclass(frozen=True)
class SystemOptions:
    """Settings shared by the systems (all validated by their own dataclasses).

    Attributes:
        teacher: the English encoder whose index ``teacher``, ``student:`` and ``oracle-dense`` search.
        psq_bitext: ``(source, split)`` pairs for :func:`clir_eval.collections.bitext.load_bitext`, tried in
            order; the first that has the query language is used.
        psq_leakage: bitext pairs equal to a topic of the evaluated split (either side): ``"drop"`` them
            (logged with their count), ``"error"`` (refuse, :class:`~clir_eval.collections.leakage.LeakageError`)
            or ``"allow"`` (keep, with a warning).
        query_batch_size: queries per encoder batch.
        search_threads: Faiss ``batch_search`` threads.
    """

    teacher: str = "minilm-l6"
    bm25: Bm25Config = field(default_factory=Bm25Config)
    psq_table: PsqTableConfig = field(default_factory=PsqTableConfig)
    psq: PsqConfig = field(default_factory=PsqConfig)
    psq_bitext: tuple[tuple[str, str], ...] = DEFAULT_PSQ_BITEXT
    psq_leakage: str = "drop"
    dense_index: DenseIndexConfig = field(default_factory=DenseIndexConfig)
    mt: Seq2SeqConfig = field(default_factory=Seq2SeqConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    query_batch_size: int = 64
    search_threads: int = 1
    show_progress: bool = False

    def __post_init__(self) -> None:
        if not self.psq_bitext or any(len(item) != 2 for item in self.psq_bitext):
            raise ValueError(f"psq_bitext must be non-empty (source, split) pairs, got {self.psq_bitext!r}")
        object.__setattr__(self, "psq_bitext", tuple(tuple(item) for item in self.psq_bitext))
        if self.psq_leakage not in LEAKAGE_POLICIES:
            raise ValueError(f"psq_leakage must be one of {LEAKAGE_POLICIES}, got {self.psq_leakage!r}")
        if self.query_batch_size < 1 or self.search_threads < 1:
            raise ValueError("query_batch_size and search_threads must be >= 1")
        for component, family in ((self.fusion.sparse, "bm25"), (self.fusion.dense, "dense")):
            if parse_system(component).family != family:
                raise ValueError(f"fusion.{'sparse' if family == 'bm25' else 'dense'} must be a {family} system, "
                                 f"got {component!r}")


# -- building blocks the runner may call directly ----------------------------------------------------


def psq_bitext(collection: "Collection", lang: str, split: str, options: SystemOptions = SystemOptions()) -> list["BitextPair"]:
    """The bitext ``bm25-psq`` learns from for ``lang``, checked against ``collection``'s ``split`` topics
    (``options.psq_leakage``: drop leaking pairs by default).

    Raises:
        ValueError: no source in ``options.psq_bitext`` has ``lang``, or nothing is left after the guard.
        LeakageError: pairs leak and ``psq_leakage="error"``.
    """
    from clir_eval.collections.bitext import bitext_languages, load_bitext
    from clir_eval.collections.leakage import evaluation_topics, guard_bitext

    for source, bitext_split in options.psq_bitext:
        if bitext_split in bitext_languages(source).get(lang, ()):
            pairs = load_bitext(source, lang, bitext_split)
            break
    else:
        raise ValueError(f"no bitext for {lang!r} in {list(options.psq_bitext)}; bm25-psq needs {lang}-en bitext")
    report = guard_bitext(pairs, evaluation_topics([collection], split), options.psq_leakage)
    if not report.pairs:
        raise ValueError(f"every {source}/{bitext_split} {lang}-en pair leaks {collection.name} {split} topics")
    logger.info("bm25-psq %s: %d %s/%s pairs (%d dropped by the leakage guard)", lang, len(report.pairs), source,
                bitext_split, report.dropped)
    return list(report.pairs)


def translator_for(spec: SystemSpec, collection: "Collection", lang: str, split: str, indexes: IndexDirs,
                   options: SystemOptions = SystemOptions()) -> Any:
    """The :class:`~clir_eval.retrieval.translation.base.QueryTranslator` of a BM25 system."""
    build = SYSTEM_KINDS[spec.kind].translator
    if build is None:
        raise ValueError(f"{spec} is not a BM25 system")
    return build(spec, collection, lang, split, indexes, options)


def _oracle_topics(collection: "Collection", split: str) -> list[Topic]:
    if collection.oracle_lang is None:
        raise ValueError(f"collection {collection.name!r} has no oracle (human English) topics")
    return collection.topics(collection.oracle_lang, split)


def _bm25_queries(spec: SystemSpec, collection: "Collection", lang: str, topics: list[Topic], split: str,
                  indexes: IndexDirs, options: SystemOptions) -> list["TranslatedQuery"]:
    """Build (or reuse) the Lucene index and translate the topics: the queries of a BM25 system."""
    from clir_eval.io import sha256_tree
    from clir_eval.retrieval.bm25 import build_lucene_index

    # The translator first: a missing MT model or translations file fails before the index is built.
    translator = translator_for(spec, collection, lang, split, indexes, options)
    # Keyed by the corpus files' hash: a reused index costs no read of the corpus, a new one reads it once.
    build_lucene_index(collection.documents(), indexes.lucene, corpus_sha256=sha256_tree(collection.corpus_path))
    queries = translator.translate(topics)
    logger.info("%s: translation %s", spec, translator.describe())
    return queries


def _bm25_hits(spec: SystemSpec, collection: "Collection", lang: str, topics: list[Topic], split: str,
               indexes: IndexDirs, hits: int, options: SystemOptions) -> Hits:
    from clir_eval.retrieval.bm25 import search_bm25

    queries = _bm25_queries(spec, collection, lang, topics, split, indexes, options)
    return search_bm25(indexes.lucene, queries, k=hits, config=options.bm25)


def query_model(spec: str | SystemSpec, options: SystemOptions = SystemOptions()) -> str | None:
    """The model that encodes the queries of a dense system (name, directory or hub id); None for the others."""
    spec = parse_system(spec)
    return _dense_models(spec, options)[1] if spec.family == "dense" else None


def _dense_models(spec: SystemSpec, options: SystemOptions) -> tuple[str, str]:
    """``(document encoder, query encoder)`` of a dense system."""
    models = SYSTEM_KINDS[spec.kind].models
    if models is None:
        raise ValueError(f"{spec} is not a dense system")
    return models(spec, options)


def _dense_hits(spec: SystemSpec, collection: "Collection", topics: list[Topic], split: str, indexes: IndexDirs,
                hits: int, options: SystemOptions) -> Hits:
    from clir_eval.models.pyserini_adapters import DocumentEncoder, QueryEncoder
    from clir_eval.io import sha256_tree
    from clir_eval.retrieval.dense import build_dense_index, encode_queries, search_dense

    doc_model, query_name = _dense_models(spec, options)
    query_encoder = QueryEncoder(query_name, batch_size=options.query_batch_size)
    # The same model on both sides is loaded once; otherwise build_dense_index loads the document encoder
    # only if the index has to be (re)built.
    doc_encoder = (DocumentEncoder(query_encoder.model, batch_size=options.dense_index.batch_size,
                                   batch_tokens=options.dense_index.batch_tokens, backend=options.dense_index.backend)
                   if doc_model == query_name else None)
    info = build_dense_index(collection.documents(), doc_model, indexes.dense_for(doc_model, options.dense_index),
                             options.dense_index, encoder=doc_encoder, show_progress=options.show_progress,
                             corpus_sha256=sha256_tree(collection.corpus_path))
    if spec.upper_bound:  # the dense oracle encodes the human English topic of each qid
        english = {t.qid: t for t in _oracle_topics(collection, split)}
        missing = [t.qid for t in topics if t.qid not in english]
        if missing:
            raise ValueError(f"no English (oracle) topic for {len(missing)} qid(s), e.g. {missing[:3]}")
        topics = [english[t.qid] for t in topics]
    vectors = encode_queries(topics, query_encoder)
    return search_dense(info.path, [t.qid for t in topics], vectors, k=hits, threads=options.search_threads,
                        ef_search=options.dense_index.hnsw_ef_search, nprobe=options.dense_index.nprobe,
                        k_factor=options.dense_index.refine_k_factor)


def search_system(spec: str | SystemSpec, collection: "Collection", lang: str, split: str = "test", *,
                  indexes: IndexDirs, hits: int = 1000, options: SystemOptions = SystemOptions()) -> Hits:
    """The hits of one system for the ``lang`` topics of ``split``: ``{qid: [(docid, score)]}``, every qid
    present (possibly empty), at most ``hits`` per query. Builds or reuses the indexes in ``indexes``."""
    spec = parse_system(spec)
    if hits < 1:
        raise ValueError(f"hits must be >= 1, got {hits}")
    topics = collection.topics(lang, split)
    if spec.family == "bm25":
        found = _bm25_hits(spec, collection, lang, topics, split, indexes, hits, options)
    elif spec.family == "dense":
        found = _dense_hits(spec, collection, topics, split, indexes, hits, options)
    else:
        from clir_eval.retrieval.fusion import fuse

        depth = options.fusion.depth
        parts = [search_system(component, collection, lang, split, indexes=indexes, hits=depth, options=options)
                 for component in (options.fusion.sparse, options.fusion.dense)]
        found = {qid: ranked[:hits] for qid, ranked in fuse(parts, options.fusion).items()}
    result: Hits = {topic.qid: [] for topic in topics}
    for qid, ranked in found.items():
        result[qid] = list(ranked)
    return result


def run_system(spec: str | SystemSpec, collection: "Collection", lang: str, split: str = "test", *,
               indexes: IndexDirs, out_path: str | os.PathLike, hits: int = 1000, tag: str | None = None,
               options: SystemOptions = SystemOptions()) -> Path:
    """Write the TREC run of system ``spec`` for ``collection``'s ``lang`` topics of ``split`` to ``out_path``.

    Args:
        spec: a system spec (see the module docstring), e.g. ``"bm25-psq"``, ``"student:out/kd-sw"``.
        collection: from :func:`clir_eval.collections.registry.load_collection`; retrieval is over its
            full corpus.
        indexes: where the Lucene index, dense indexes and PSQ tables are built or reused.
        out_path: the run file, written atomically (``runs/<collection>/<lang>/<system>.run`` by convention,
            see :func:`default_run_path`).
        hits: depth per query.
        tag: the run tag (sixth column); default :func:`system_name` of ``spec``.

    Returns:
        ``out_path``. The same inputs give a byte-identical file (hits ordered as trec_eval ranks them).

    Raises:
        ValueError: no query got a single hit (nothing is written).
    """
    from clir_eval.retrieval.runs import write_run

    spec = parse_system(spec)
    out_path = Path(out_path)
    def empty(count: int) -> str:
        # An empty run would evaluate as a score of 0 for every query, a number that looks like a result.
        return (f"{spec.name} found no hit for any of the {count} {collection.name} {lang} {split} queries; "
                f"{out_path} was not written (an empty index, or a model whose embeddings are not finite?)")

    if spec.family == "bm25":  # written query by query as Lucene returns them (the same bytes as write_run)
        from clir_eval.retrieval.bm25 import write_bm25_run

        if hits < 1:
            raise ValueError(f"hits must be >= 1, got {hits}")
        topics = collection.topics(lang, split)
        queries = _bm25_queries(spec, collection, lang, topics, split, indexes, options)
        count = len({t.qid for t in topics} | {q.qid for q in queries})
        write_bm25_run(indexes.lucene, queries, out_path, tag=tag or spec.name, k=hits, config=options.bm25,
                       empty_error=empty(count))
    else:
        found = search_system(spec, collection, lang, split, indexes=indexes, hits=hits, options=options)
        if found and not any(found.values()):
            raise ValueError(empty(len(found)))
        write_run(out_path, found, tag=tag or spec.name, depth=hits)
        count = len(found)
    logger.info("wrote %s (%s, %s %s %s, %d queries)", out_path, spec, collection.name, lang, split, count)
    return out_path


def default_run_path(root: str | os.PathLike, collection: str, lang: str, spec: str | SystemSpec) -> Path:
    """``root/<collection>/<lang>/<system name>.run`` (the results layout shared by runner and report)."""
    return Path(root) / collection / lang / f"{system_name(spec)}.run"


def index_key(collection: "Collection") -> str:
    """Directory name of a collection's indexes: its name plus a hash of its corpus files, so that two
    collections with the same name (two user directories called ``data``) never share, and rebuild, each
    other's indexes."""
    from clir_eval.io import sha256_tree

    return f"{_UNSAFE.sub('_', collection.name)}-{sha256_tree(collection.corpus_path)[:12]}"


def default_index_dirs(collection: "Collection") -> IndexDirs:
    """``<cache root>/indexes/<index_key>/{lucene,dense}`` and the shared PSQ table cache ``<cache root>/psq``
    (tables are keyed by their bitext and settings, so collections share them); the cache root is that of
    :func:`clir_eval.models.cache.model_cache_dir`."""
    from clir_eval.retrieval.translation.psq import psq_cache_dir

    under = IndexDirs.under(psq_cache_dir().parent / "indexes" / index_key(collection))
    return IndexDirs(lucene=under.lucene, dense=under.dense, psq=psq_cache_dir())
