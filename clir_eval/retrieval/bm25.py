"""BM25 over a Lucene index of the English corpus, through Pyserini (``LuceneIndexer``, ``LuceneSearcher``).

Free-text queries go through ``LuceneSearcher.batch_search`` (Anserini analyses them with the index's
English analyzer, in ``threads`` Java threads). Weighted queries (PSQ) are Lucene ``BooleanQuery``s of
boosted ``TermQuery``s over index terms, built with ``pyserini.search.lucene.querybuilder``;
``batch_search`` only takes strings, so they are searched one by one.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clir_eval.collections.records import Document
from clir_eval.io import atomic_directory, atomic_write, build_lock, read_json_or_none
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
    """BM25 parameters (Anserini's defaults k1=0.9, b=0.4) and search threads."""

    k1: float = 0.9
    b: float = 0.4
    threads: int = 1

    def __post_init__(self) -> None:
        if self.k1 < 0:
            raise ValueError(f"k1 must be >= 0, got {self.k1}")
        if not 0 <= self.b <= 1:
            raise ValueError(f"b must be in [0, 1], got {self.b}")
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")


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


def build_lucene_index(documents: Iterable[Document], index_dir: str | os.PathLike, force: bool = False) -> LuceneIndexInfo:
    """Index ``documents`` (English) with Pyserini's ``LuceneIndexer`` into ``index_dir``, atomically.

    The directory records the corpus SHA-256; an existing index built from the same documents is reused
    unless ``force``. One indexing thread, so Lucene's internal document order (which breaks score ties
    inside Lucene) follows the corpus order on every build.
    """
    index_dir = Path(index_dir)
    docs, sha = corpus_fingerprint(documents)
    if not docs:
        raise ValueError("cannot index an empty corpus")
    with build_lock(index_dir):  # a second process waits for this build and then reuses it
        return _build_lucene_index(docs, sha, index_dir, force)


def _build_lucene_index(docs: list[Document], sha: str, index_dir: Path, force: bool) -> LuceneIndexInfo:
    meta = _read_meta(index_dir)
    wanted = {"format": LUCENE_FORMAT, "corpus_sha256": sha, "analyzer": INDEX_ANALYZER}
    if not force and meta is not None and all(meta.get(k) == v for k, v in wanted.items()):
        logger.info("reusing Lucene index %s (%d documents)", index_dir, meta["num_docs"])
        return LuceneIndexInfo(index_dir, sha, int(meta["num_docs"]), reused=True)
    if meta is not None:
        logger.info("rebuilding Lucene index %s: it was built from other documents or settings", index_dir)
    java_analyzer(INDEX_ANALYZER)  # starts the JVM before pyserini is imported
    from pyserini.index.lucene import LuceneIndexer

    with atomic_directory(index_dir) as tmp:
        indexer = LuceneIndexer(str(tmp), threads=1)
        try:
            batch: list[dict[str, str]] = []
            for doc in docs:
                batch.append({"id": doc.docid, "contents": document_text(doc)})
                if len(batch) == 1000:
                    indexer.add_batch_dict(batch)
                    batch = []
            if batch:
                indexer.add_batch_dict(batch)
        finally:
            indexer.close()
        info = {**wanted, "num_docs": len(docs), "pyserini_indexer": "LuceneIndexer (Anserini DefaultEnglishAnalyzer, porter)"}
        with atomic_write(tmp / LUCENE_META) as handle:
            json.dump(info, handle, indent=2, sort_keys=True)
            handle.write("\n")
    logger.info("built Lucene index %s (%d documents)", index_dir, len(docs))
    return LuceneIndexInfo(index_dir, sha, len(docs))


class Bm25Searcher:
    """A Pyserini ``LuceneSearcher`` with BM25(k1, b) over an index built by :func:`build_lucene_index`."""

    def __init__(self, index_dir: str | os.PathLike, config: Bm25Config = Bm25Config()) -> None:
        index_dir = Path(index_dir)
        if not index_dir.is_dir():
            raise FileNotFoundError(f"no Lucene index at {index_dir}")
        java_analyzer(INDEX_ANALYZER)  # starts the JVM before pyserini is imported
        from pyserini.search.lucene import LuceneSearcher

        self.config = config
        self.searcher = LuceneSearcher(str(index_dir))
        self.searcher.set_bm25(float(config.k1), float(config.b))

    def search(self, queries: list[TranslatedQuery], k: int = 1000) -> Hits:
        """BM25 top-``k`` for each query: ``{qid: [(docid, score)]}`` (every qid present, maybe empty)."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        qids = [q.qid for q in queries]
        if len(set(qids)) != len(qids):
            raise ValueError("duplicate qids in queries")
        results: Hits = {qid: [] for qid in qids}
        text_queries = [q for q in queries if not q.is_weighted]
        if text_queries:
            found = self.searcher.batch_search(
                [q.text for q in text_queries], [q.qid for q in text_queries], k=k, threads=self.config.threads
            )
            for qid, hits in found.items():
                results[str(qid)] = [(str(h.docid), float(h.score)) for h in hits]
        for query in queries:
            if query.is_weighted and query.terms:
                hits = self.searcher.search(weighted_query(query.terms), k=k)
                results[query.qid] = [(str(h.docid), float(h.score)) for h in hits]
        return results

    def close(self) -> None:
        self.searcher.close()


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
