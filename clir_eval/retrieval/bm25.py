"""BM25 over a Lucene index of the English corpus, through Pyserini's Anserini jar.

Indexing streams the corpus into Pyserini's ``LuceneIndexer`` in batches of raw JSON documents. Searching
runs, for each query, what Pyserini's ``LuceneSearcher.search`` runs in Java (:class:`Bm25Searcher`), on
``threads`` Python threads whose Java calls release the GIL; the hits of a query come back as two Java
arrays (docids, float scores) instead of one Python object per hit, so a run of 1,000 hits per query is
written (:meth:`Bm25Searcher.write_run`) holding one query at a time. Free-text queries are analysed with
Anserini's default English analyzer; weighted queries (PSQ) are Lucene ``BooleanQuery``s of boosted
``TermQuery``s over index terms, built with ``pyserini.search.lucene.querybuilder``.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clir_eval.collections.records import Document
from clir_eval.io import atomic_directory, atomic_write, build_lock, read_json_or_none
from clir_eval.progress import progress
from clir_eval.retrieval.analysis import INDEX_ANALYZER, java_analyzer
from clir_eval.retrieval.translation.base import TranslatedQuery

logger = logging.getLogger(__name__)

LUCENE_META = "clir_eval_index.json"
LUCENE_FORMAT = "clir-eval-lucene-index/1"
FIELD = "contents"

#: ``{qid: [(docid, score), ...]}`` best first.
Hits = dict[str, list[tuple[str, float]]]


@dataclass(frozen=True)
class Bm25Config:
    """BM25 parameters (Anserini's defaults k1=0.9, b=0.4) and search threads (0 = the machine's cores;
    the hits do not depend on it)."""

    k1: float = 0.9
    b: float = 0.4
    threads: int = 0

    def __post_init__(self) -> None:
        if self.k1 < 0:
            raise ValueError(f"k1 must be >= 0, got {self.k1}")
        if not 0 <= self.b <= 1:
            raise ValueError(f"b must be in [0, 1], got {self.b}")
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0 (0 = the machine's cores), got {self.threads}")

    @property
    def search_threads(self) -> int:
        """``threads``, or the machine's cores when it is 0."""
        return self.threads or os.cpu_count() or 1


@dataclass(frozen=True)
class LuceneIndexInfo:
    """What a Lucene index directory holds and what built it (stored as ``clir_eval_index.json``)."""

    path: Path
    corpus_sha256: str
    num_docs: int
    analyzer: str = INDEX_ANALYZER
    reused: bool = False


def document_text(doc: Document) -> str:
    """The text indexed for a document: its title (if any) then its contents (as the dense encoder sees it)."""
    return f"{doc.title} {doc.contents}".strip() if doc.title else doc.contents


def corpus_fingerprint(documents: Iterable[Document]) -> tuple[list[Document], str]:
    """Materialise ``documents`` and hash their ids, titles and contents (SHA-256, format independent)."""
    import hashlib

    digest = hashlib.sha256()
    docs = []
    for doc in documents:
        docs.append(doc)
        for part in (doc.docid, doc.title, doc.contents):
            encoded = part.encode("utf-8")
            digest.update(len(encoded).to_bytes(8, "little"))
            digest.update(encoded)
    return docs, digest.hexdigest()


def _read_meta(path: Path) -> dict[str, Any] | None:
    return read_json_or_none(path / LUCENE_META)


def build_lucene_index(documents: Iterable[Document], index_dir: str | os.PathLike, force: bool = False, *,
                       corpus_sha256: str | None = None, threads: int = 1) -> LuceneIndexInfo:
    """Index ``documents`` (English) with Pyserini's ``LuceneIndexer`` into ``index_dir``, atomically.

    The directory records the corpus SHA-256; an existing index built from the same corpus is reused
    unless ``force``.

    Args:
        corpus_sha256: the corpus's key when the caller has one (e.g. :func:`clir_eval.io.sha256_tree` of
            its files): ``documents`` is then read only if the index is (re)built, once, as a stream. Without
            it the documents are held in a list to hash them (:func:`corpus_fingerprint`; small corpora, tests).
        threads: indexing threads. One (the default) keeps Lucene's internal document order equal to the
            corpus order on every build; more give the same hits (ties are broken by the ``id`` field).
    """
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    index_dir = Path(index_dir)
    if corpus_sha256 is None:
        docs, sha = corpus_fingerprint(documents)
        if not docs:
            raise ValueError("cannot index an empty corpus")
        documents = docs
    else:
        sha = corpus_sha256
    with build_lock(index_dir):  # a second process waits for this build and then reuses it
        return _build_lucene_index(documents, sha, index_dir, force, threads)


#: Documents handed to Java per call (one JNI call per batch; Java parses their JSON).
INDEX_BATCH = 1000


def _build_lucene_index(docs: Iterable[Document], sha: str, index_dir: Path, force: bool,
                        threads: int) -> LuceneIndexInfo:
    meta = _read_meta(index_dir)
    wanted = {"format": LUCENE_FORMAT, "corpus_sha256": sha, "analyzer": INDEX_ANALYZER}
    if not force and meta is not None and all(meta.get(k) == v for k, v in wanted.items()):
        logger.info("reusing Lucene index %s (%d documents)", index_dir, meta["num_docs"])
        return LuceneIndexInfo(index_dir, sha, int(meta["num_docs"]), reused=True)
    if meta is not None:
        logger.info("rebuilding Lucene index %s: it was built from other documents or settings", index_dir)
    java_analyzer(INDEX_ANALYZER)  # starts the JVM before pyserini is imported
    from pyserini.index.lucene import LuceneIndexer

    read = indexed = 0
    with atomic_directory(index_dir) as tmp:
        indexer = LuceneIndexer(str(tmp), threads=threads)
        try:
            # The JSON Anserini would read from a JsonCollection file: the same Lucene document as
            # add_batch_dict's JsonCollectionDocument.fromFields, without one JNI call per document.
            raw = (json.dumps({"id": doc.docid, "contents": document_text(doc)}) for doc in docs)
            with progress(f"Lucene index {index_dir.name}", unit="docs") as report:
                while batch := list(itertools.islice(raw, INDEX_BATCH)):
                    # add_batch_raw's Java call, which also returns how many it indexed
                    indexed += indexer.object.addRawDocuments(batch)
                    read += len(batch)
                    report.advance(len(batch))
        finally:
            indexer.close()
        if not read:
            raise ValueError("cannot index an empty corpus")
        if indexed != read:  # Anserini skips documents whose contents are empty
            logger.warning("Lucene index %s: %d of %d documents not indexed (empty contents)", index_dir,
                           read - indexed, read)
        info = {**wanted, "num_docs": indexed,
                "pyserini_indexer": "LuceneIndexer (Anserini DefaultEnglishAnalyzer, porter)"}
        with atomic_write(tmp / LUCENE_META) as handle:
            json.dump(info, handle, indent=2, sort_keys=True)
            handle.write("\n")
    logger.info("built Lucene index %s (%d documents)", index_dir, indexed)
    return LuceneIndexInfo(index_dir, sha, indexed)


class Bm25Searcher:
    """BM25(k1, b) over an index built by :func:`build_lucene_index`, searched on ``config.threads`` threads.

    Each query runs what Pyserini's ``LuceneSearcher.search`` runs (Anserini ``SimpleSearcher._search``):
    a Lucene top-``k`` search sorted by score then the ``id`` field, ``ScoredDocs.fromTopDocs`` and
    Anserini's ``ScoreTiesAdjusterReranker`` (scores rounded to 1e-4, ties nudged by 1e-6). The hits come
    back as two Java arrays, docids and float scores, each converted in one call.
    """

    def __init__(self, index_dir: str | os.PathLike, config: Bm25Config = Bm25Config()) -> None:
        index_dir = Path(index_dir)
        if not index_dir.is_dir():
            raise FileNotFoundError(f"no Lucene index at {index_dir}")
        java_analyzer(INDEX_ANALYZER)  # starts the JVM before pyserini is imported
        from jnius import autoclass
        from pyserini.search.lucene import querybuilder  # noqa: F401  (imported here, not in worker threads)

        self.config = config
        self._reader = autoclass("io.anserini.index.IndexReaderUtils").getReader(str(index_dir))
        self._searcher = autoclass("org.apache.lucene.search.IndexSearcher")(self._reader)  # thread-safe
        self._searcher.setSimilarity(
            autoclass("org.apache.lucene.search.similarities.BM25Similarity")(float(config.k1), float(config.b)))
        # What SimpleSearcher(index_dir) searches with (Anserini 1.7): the default English analyzer, the
        # bag-of-words query generator, score ties broken by the id field, and the tie adjuster.
        self._analyzer = autoclass("io.anserini.index.IndexCollection").DEFAULT_ANALYZER
        self._generator = autoclass("io.anserini.search.query.BagOfWordsQueryGenerator")()
        self._sort = autoclass("io.anserini.search.SearchCollection").BREAK_SCORE_TIES_BY_DOCID
        self._scored_docs = autoclass("io.anserini.search.ScoredDocs")
        self._ties = autoclass("io.anserini.rerank.lib.ScoreTiesAdjusterReranker")()
        # SimpleSearcher's own test: an index not written by Lucene 9 is searched without the id tie-break.
        self._lucene8 = "lucene.version=9" not in self._reader.toString()

    def _lucene_query(self, query: TranslatedQuery) -> Any:
        """The Lucene ``Query`` of ``query`` (None for a weighted query without terms: no hits)."""
        if query.is_weighted:
            return weighted_query(query.terms) if query.terms else None
        return self._generator.buildQuery(FIELD, self._analyzer, query.text)

    def _top(self, lucene_query: Any, k: int) -> list[tuple[str, float]]:
        """Search one Lucene query. Called from worker threads: it calls methods only of objects shared by
        all of them or static ones (see :mod:`clir_eval.jvm` on pyjnius and threads)."""
        if lucene_query is None:
            return []
        if self._lucene8:
            top = self._searcher.search(lucene_query, k)
        else:
            top = self._searcher.search(lucene_query, k, self._sort, True)
        scored = self._ties.rerank(self._scored_docs.fromTopDocs(top, self._searcher), None)
        # Two conversions per query: a list of str and a list of float (float32 values, exactly).
        return list(zip(scored.docids or (), scored.scores or ()))

    def iter_hits(self, queries: Iterable[TranslatedQuery], k: int = 1000,
                  description: str = "BM25 search") -> Iterator[tuple[str, list[tuple[str, float]]]]:
        """``(qid, [(docid, score), ...])`` for each query, in the given order, best first as Lucene ranks
        them (ties by id); ``config.threads`` queries are searched at once. Progress counts queries."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        queries = list(queries)
        threads = min(self.config.search_threads, max(1, len(queries)))
        from jnius import detach

        # Lucene queries are built in this thread (they call methods of per-query Java objects); a worker
        # thread detaches from the JVM as it ends, as pyjnius asks.
        built = (self._lucene_query(query) for query in queries)
        with progress(description, total=len(queries), unit="queries") as report:
            for query, hits in zip(queries, _ordered_map(lambda q: self._top(q, k), built, threads, detach)):
                report.advance()
                yield query.qid, hits

    def search(self, queries: list[TranslatedQuery], k: int = 1000) -> Hits:
        """BM25 top-``k`` for each query: ``{qid: [(docid, score)]}`` (every qid present, maybe empty)."""
        _check_unique(queries)
        return dict(self.iter_hits(queries, k))

    def write_run(self, queries: list[TranslatedQuery], path: str | os.PathLike, tag: str, k: int = 1000,
                  empty_error: str | None = None) -> int:
        """Write the TREC run of ``queries`` to ``path``: the same bytes as
        ``runs.write_run(path, self.search(queries, k), tag, depth=k)``, holding one query at a time
        (``empty_error``: see :func:`~clir_eval.retrieval.runs.write_run_stream`).

        Returns:
            The number of queries searched.
        """
        from clir_eval.retrieval.runs import check_qid, check_tag, write_run_stream

        _check_unique(queries)
        check_tag(tag)
        ordered = sorted(queries, key=lambda q: check_qid(q.qid))  # write_run's order, checked before searching
        return write_run_stream(path, self.iter_hits(ordered, k), tag, depth=k, empty_error=empty_error)

    def close(self) -> None:
        self._reader.close()


def _check_unique(queries: list[TranslatedQuery]) -> None:
    qids = [q.qid for q in queries]
    if len(set(qids)) != len(qids):
        raise ValueError("duplicate qids in queries")


def _ordered_map(function: Callable[[Any], Any], items: Iterable[Any], threads: int,
                 thread_exit: Callable[[], Any] | None = None) -> Iterator[Any]:
    """``function(item)`` for each item, yielded in order, computed by ``threads`` threads at most a few
    items ahead of the consumer (the memory of a few queries' hits, not of the run). ``items`` is read in
    the calling thread, lazily; a worker's exception is raised in the consumer. Each worker thread calls
    ``thread_exit`` as it ends.

    Useful only where ``function`` spends its time in Java calls, which release the GIL.
    """
    if threads <= 1:
        yield from map(function, items)
        return
    import queue
    import threading

    todo: queue.Queue = queue.Queue()
    done: dict[int, tuple[bool, Any]] = {}
    ready = threading.Condition()

    def work() -> None:
        try:
            while (job := todo.get()) is not None:
                index, item = job
                try:
                    result = (True, function(item))
                except BaseException as exc:  # handed to the consumer, raised there
                    result = (False, exc)
                with ready:
                    done[index] = result
                    ready.notify_all()
        finally:
            if thread_exit is not None:
                thread_exit()

    workers = [threading.Thread(target=work, name=f"bm25-search-{n}", daemon=True) for n in range(threads)]
    for worker in workers:
        worker.start()
    source = enumerate(items)
    submitted = 0
    try:
        for job in itertools.islice(source, 4 * threads):
            todo.put(job)
            submitted += 1
        for index in itertools.count():
            if index == submitted:
                return
            with ready:
                ready.wait_for(lambda: index in done)
                ok, value = done.pop(index)
            if not ok:
                raise value
            for job in itertools.islice(source, 1):  # keep the window full
                todo.put(job)
                submitted += 1
            yield value
    finally:
        for _ in workers:
            todo.put(None)
        for worker in workers:
            worker.join()


def weighted_query(terms: Iterable[tuple[str, float]], field: str = FIELD) -> Any:
    """A Lucene ``BooleanQuery`` (SHOULD clauses) of ``BoostQuery(TermQuery(term), weight)``.

    Its BM25 score is ``sum_t weight_t * BM25(t, d)``. Terms are index terms and are not analysed again
    (Porter stemming is not idempotent: stemming a stem can change it).
    """
    java_analyzer(INDEX_ANALYZER)
    from pyserini.analysis import JWhiteSpaceAnalyzer
    from pyserini.search.lucene import querybuilder

    # A whitespace analyzer returns a single index term unchanged: get_term_query then builds the exact term.
    identity = JWhiteSpaceAnalyzer()
    should = querybuilder.JBooleanClauseOccur["should"].value
    builder = querybuilder.get_boolean_query_builder()
    for term, weight in terms:
        term_query = querybuilder.get_term_query(term, field=field, analyzer=identity)
        builder.add(querybuilder.get_boost_query(term_query, float(weight)), should)
    return builder.build()


def search_bm25(
    index_dir: str | os.PathLike, queries: list[TranslatedQuery], k: int = 1000, config: Bm25Config = Bm25Config()
) -> Hits:
    """Open the index, run :meth:`Bm25Searcher.search`, close it."""
    searcher = Bm25Searcher(index_dir, config)
    try:
        return searcher.search(queries, k)
    finally:
        searcher.close()


def write_bm25_run(index_dir: str | os.PathLike, queries: list[TranslatedQuery], path: str | os.PathLike, tag: str,
                   k: int = 1000, config: Bm25Config = Bm25Config(), empty_error: str | None = None) -> int:
    """Open the index, run :meth:`Bm25Searcher.write_run`, close it."""
    searcher = Bm25Searcher(index_dir, config)
    try:
        return searcher.write_run(queries, path, tag, k, empty_error=empty_error)
    finally:
        searcher.close()
