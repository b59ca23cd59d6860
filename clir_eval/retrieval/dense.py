"""Dense retrieval the Pyserini way: encode the English corpus into a Faiss index, search it with ``FaissSearcher``.

An index directory has Pyserini's own layout, two plain files that ``FaissSearcher`` (and so
``python -m pyserini.search.faiss --index DIR``) reads unchanged:

* ``index``: ``faiss.write_index`` of an inner-product index (``IndexFlatIP``, or ``IndexHNSWFlat`` with
  ``METRIC_INNER_PRODUCT``);
* ``docid``: one docid per line, line i = vector i.

Beside them, ``clir_eval_index.json`` records what built the index (model, its encoder config and a
fingerprint of its weights, the corpus SHA-256, index kind); :func:`build_dense_index` reuses an index
whose record matches and rebuilds otherwise. Encoding can be split into contiguous shards of the corpus
(:func:`shard_range`) built separately and merged with :func:`merge_dense_shards`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import MISSING, asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from clir_eval.collections.records import Document, Topic
from clir_eval.io import atomic_directory, atomic_write, build_lock, read_json_or_none, sha256_file
from clir_eval.retrieval.bm25 import corpus_fingerprint

logger = logging.getLogger(__name__)

INDEX_FILE = "index"
DOCID_FILE = "docid"
META_FILE = "clir_eval_index.json"
DENSE_FORMAT = "clir-eval-dense-index/1"
INDEX_KINDS = ("flat", "hnsw")
# Files whose bytes define a model directory (weights, configs, tokenizer); other files (READMEs, ONNX
# exports) do not change the embeddings we compute.
_MODEL_FILE_SUFFIXES = (".safetensors", ".bin", ".json", ".txt", ".model")

#: ``{qid: [(docid, score), ...]}`` best first.
Hits = dict[str, list[tuple[str, float]]]


@dataclass(frozen=True)
class DenseIndexConfig:
    """How to build a dense index.

    Attributes:
        kind: ``"flat"`` (exact inner product) or ``"hnsw"`` (``IndexHNSWFlat``, inner product).
        hnsw_m: HNSW neighbours per node.
        hnsw_ef_construction: HNSW build-time beam.
        hnsw_ef_search: HNSW search-time beam used by the systems (Faiss's default, 16, loses recall).
        batch_size: documents per encoder batch.
        build_threads: Faiss threads while adding to an HNSW graph; 1 (default) keeps the graph, and so
            the search results, identical from build to build (Faiss inserts in parallel otherwise).
    """

    kind: str = "flat"
    hnsw_m: int = 32
    hnsw_ef_construction: int = 200
    hnsw_ef_search: int = 128
    batch_size: int = 64
    build_threads: int = 1

    def __post_init__(self) -> None:
        if self.kind not in INDEX_KINDS:
            raise ValueError(f"index kind must be one of {INDEX_KINDS}, got {self.kind!r}")
        for name in ("hnsw_m", "hnsw_ef_construction", "hnsw_ef_search", "batch_size", "build_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    def index_params(self) -> dict[str, Any]:
        """The settings that change the index contents (batch size, threads and ef_search do not)."""
        if self.kind == "flat":
            return {"kind": "flat"}
        return {"kind": "hnsw", "hnsw_m": self.hnsw_m, "hnsw_ef_construction": self.hnsw_ef_construction}


@dataclass(frozen=True)
class DenseIndexMeta:
    """``clir_eval_index.json``: the record of what built a dense index, read back to reuse the index when a build
    asks for the same thing, to merge shards, and to check the queries' dimension."""

    format: str
    corpus_sha256: str
    model: str
    encoder: dict[str, Any]  # the model's EncoderConfig
    model_sha256: str | None  # model_fingerprint(); None for a hub id
    index: dict[str, Any]  # DenseIndexConfig.index_params(), and shard_id, shard_num, start, end for a shard
    num_docs: int
    dim: int
    corpus_num_docs: int
    merged_from_shards: int | None = None

    @classmethod
    def from_dict(cls, record: Any) -> DenseIndexMeta | None:
        """The record of a parsed ``clir_eval_index.json``; None if it lacks a field (another format: rebuild)."""
        if not isinstance(record, dict) or any(f.name not in record for f in fields(cls) if f.default is MISSING):
            return None
        return cls(**{f.name: record[f.name] for f in fields(cls) if f.name in record})

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        if self.merged_from_shards is None:
            del record["merged_from_shards"]
        return record

    def matches(self, wanted: dict[str, Any]) -> bool:
        """Whether this index was built as ``wanted`` asks (field name -> value)."""
        return all(getattr(self, name) == value for name, value in wanted.items())


@dataclass(frozen=True)
class DenseIndexInfo:
    """An index directory and the record of what built it."""

    path: Path
    meta: DenseIndexMeta
    reused: bool = False

    @property
    def num_docs(self) -> int:
        return self.meta.num_docs

    @property
    def dim(self) -> int:
        return self.meta.dim


def shard_range(num_docs: int, shard_id: int, shard_num: int) -> tuple[int, int]:
    """``[start, end)`` of shard ``shard_id`` of ``shard_num`` contiguous, near-equal shards (corpus order)."""
    if shard_num < 1 or not 0 <= shard_id < shard_num:
        raise ValueError(f"need 0 <= shard_id < shard_num, got shard_id={shard_id} shard_num={shard_num}")
    return num_docs * shard_id // shard_num, num_docs * (shard_id + 1) // shard_num


def shard_dir(index_dir: str | os.PathLike, shard_id: int, shard_num: int) -> Path:
    """Where shard ``shard_id`` of ``shard_num`` of ``index_dir`` is built: ``<index_dir>.shard<i>of<n>``."""
    index_dir = Path(index_dir)
    return index_dir.with_name(f"{index_dir.name}.shard{shard_id}of{shard_num}")


def model_fingerprint(location: str) -> str | None:
    """SHA-256 over a local model directory's weight, config and tokenizer files (None for a hub id)."""
    path = Path(location)
    if not path.is_dir():
        return None
    digest = hashlib.sha256()
    for file in sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(_MODEL_FILE_SUFFIXES)):
        digest.update(file.name.encode())
        digest.update(sha256_file(file).encode())
    return digest.hexdigest()


def describe_model(model: str) -> dict[str, Any]:
    """The record of an encoder that goes into an index's metadata: name, encoder config, fingerprint."""
    from clir_eval.models.registry import resolve_model

    spec = resolve_model(model)
    return {"model": spec.name, "encoder": spec.encoder.to_dict(), "model_sha256": model_fingerprint(spec.local_path())}


def read_index_meta(index_dir: str | os.PathLike) -> DenseIndexMeta | None:
    """The record of what built a dense index, or None if it has none or an unreadable one."""
    return DenseIndexMeta.from_dict(read_json_or_none(Path(index_dir) / META_FILE))


def _new_faiss_index(dim: int, config: DenseIndexConfig) -> Any:
    import faiss

    if config.kind == "flat":
        return faiss.IndexFlatIP(dim)
    index = faiss.IndexHNSWFlat(dim, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = config.hnsw_ef_construction
    return index


@contextlib.contextmanager
def faiss_threads(threads: int) -> Iterator[None]:
    """Run Faiss on ``threads`` OpenMP threads, then restore the previous count.

    The count is process-wide and shared with torch (one libgomp): left changed, every later torch
    encoder in the process runs on that many cores (a study's query encoding ran 2-3x slower after
    its first one-thread dense search).
    """
    import faiss

    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(threads)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


def _write_index(
    directory: Path, vectors: np.ndarray, docids: Sequence[str], config: DenseIndexConfig, meta: DenseIndexMeta
) -> None:
    """Write ``index``, ``docid`` and the metadata into ``directory`` (a fresh temporary directory)."""
    import faiss

    for docid in docids:
        # FaissSearcher reads the docid file line by line and strips the right end.
        if not docid or docid != docid.strip() or "\n" in docid or "\r" in docid:
            raise ValueError(f"docid {docid!r} cannot be stored one per line (empty, or has line breaks/edge spaces)")
    index = _new_faiss_index(vectors.shape[1], config)
    with faiss_threads(config.build_threads):
        index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    faiss.write_index(index, str(directory / INDEX_FILE))
    with atomic_write(directory / DOCID_FILE) as handle:
        handle.writelines(f"{docid}\n" for docid in docids)
    with atomic_write(directory / META_FILE) as handle:
        json.dump(meta.to_dict(), handle, indent=2, sort_keys=True, ensure_ascii=False)
        handle.write("\n")


def encode_documents(documents: Sequence[Document], encoder: Any, show_progress: bool = False) -> np.ndarray:
    """Embed documents with a Pyserini-shaped ``DocumentEncoder`` (``encode(texts, titles=None) -> (n, d)``)."""
    texts = [doc.contents for doc in documents]
    titles = [doc.title for doc in documents] if any(doc.title for doc in documents) else None
    vectors = encoder.encode(texts, titles=titles, show_progress=show_progress)
    return np.asarray(vectors, dtype=np.float32)


def build_dense_index(
    documents: Iterable[Document],
    model: str,
    index_dir: str | os.PathLike,
    config: DenseIndexConfig = DenseIndexConfig(),
    shard: tuple[int, int] | None = None,
    encoder: Any = None,
    force: bool = False,
    show_progress: bool = False,
) -> DenseIndexInfo:
    """Encode ``documents`` with ``model`` (built-in name, directory or hub id) into a Pyserini Faiss index.

    Args:
        documents: the English corpus, in its order (the order of ``docid``).
        model: the encoder; recorded with its encoder config and weights fingerprint.
        index_dir: the index directory (built atomically); with ``shard=(i, n)``, the shard goes to
            :func:`shard_dir` ``(index_dir, i, n)`` instead and always holds a flat index.
        encoder: an already loaded Pyserini-shaped ``DocumentEncoder`` for ``model`` (loaded here if None).
        force: rebuild even when the directory records the same model, settings and corpus.

    Returns:
        The index directory and its metadata (``reused`` when an existing index matched).
    """
    docs, corpus_sha = corpus_fingerprint(documents)
    if not docs:
        raise ValueError("cannot index an empty corpus")
    target = Path(index_dir)
    params = config.index_params()
    start, end = 0, len(docs)
    if shard is not None:
        start, end = shard_range(len(docs), *shard)
        target = shard_dir(index_dir, *shard)
        params = {"kind": "flat", "shard_id": shard[0], "shard_num": shard[1], "start": start, "end": end}
    described = describe_model(model)
    wanted = {"format": DENSE_FORMAT, "corpus_sha256": corpus_sha, **described, "index": params}
    with build_lock(target):  # a second process waits for this build and then reuses it
        meta = read_index_meta(target)
        if not force and meta is not None and meta.matches(wanted):
            logger.info("reusing dense index %s (%s, %d documents)", target, meta.model, meta.num_docs)
            return DenseIndexInfo(target, meta, reused=True)
        if meta is not None:
            logger.info("rebuilding dense index %s: it was built from another model, corpus or setting", target)
        if encoder is None:
            from clir_eval.models.pyserini_adapters import DocumentEncoder

            encoder = DocumentEncoder(model, batch_size=config.batch_size)
        part = docs[start:end]
        vectors = encode_documents(part, encoder, show_progress=show_progress) if part else None
        if vectors is None:
            raise ValueError(f"shard {shard} of {len(docs)} documents is empty; use fewer shards")
        meta = DenseIndexMeta(**wanted, num_docs=len(part), dim=int(vectors.shape[1]), corpus_num_docs=len(docs))
        with atomic_directory(target) as tmp:
            _write_index(tmp, vectors, [doc.docid for doc in part], replace(config, kind=params["kind"]), meta)
        logger.info("built dense index %s (%s, %d documents, dim %d)", target, meta.model, meta.num_docs, meta.dim)
        return DenseIndexInfo(target, meta)


def read_vectors(index_dir: str | os.PathLike) -> tuple[np.ndarray, list[str]]:
    """All vectors (``(n, d)`` float32, in docid-file order) and docids of a Pyserini-layout Faiss index."""
    import faiss

    index_dir = Path(index_dir)
    index = faiss.read_index(str(index_dir / INDEX_FILE))
    docids = (index_dir / DOCID_FILE).read_text(encoding="utf-8").splitlines()
    if len(docids) != index.ntotal:
        raise ValueError(f"{index_dir}: {index.ntotal} vectors but {len(docids)} docids")
    # IndexFlatIP and IndexHNSWFlat both store the raw vectors and can reconstruct them exactly.
    return index.reconstruct_n(0, index.ntotal).astype(np.float32, copy=False), docids


def merge_dense_shards(
    index_dir: str | os.PathLike, shard_num: int, config: DenseIndexConfig = DenseIndexConfig()
) -> DenseIndexInfo:
    """Merge shards ``0..shard_num-1`` of ``index_dir`` (built with ``shard=(i, shard_num)``) into ``index_dir``.

    The shards must share model, encoder config, weights and corpus, and cover the corpus contiguously;
    the vectors are concatenated in shard order, so the result has the same docids, order and vectors as
    an unsharded build (up to float rounding from different encoder batches).
    """
    metas = []
    for shard_id in range(shard_num):
        path = shard_dir(index_dir, shard_id, shard_num)
        meta = read_index_meta(path)
        if meta is None:
            raise FileNotFoundError(f"shard {shard_id} of {shard_num} is missing: no readable {path / META_FILE}")
        metas.append((path, meta))
    first = metas[0][1]
    shared = ("format", "corpus_sha256", "model", "encoder", "model_sha256", "corpus_num_docs", "dim")
    expected_start = 0
    for path, meta in metas:
        for name in shared:
            if getattr(meta, name) != getattr(first, name):
                raise ValueError(f"{path}: {name} differs from shard 0 ({getattr(meta, name)!r} != "
                                 f"{getattr(first, name)!r})")
        if meta.index.get("start") != expected_start:
            raise ValueError(f"{path}: starts at document {meta.index.get('start')}, expected {expected_start}")
        expected_start = meta.index["end"]
    if expected_start != first.corpus_num_docs:
        raise ValueError(f"shards cover {expected_start} of {first.corpus_num_docs} documents")
    parts = [read_vectors(path) for path, _ in metas]
    vectors = np.concatenate([v for v, _ in parts])
    docids = [d for _, ids in parts for d in ids]
    meta = replace(first, index=config.index_params(), num_docs=len(docids), merged_from_shards=shard_num)
    target = Path(index_dir)
    with atomic_directory(target) as tmp:
        _write_index(tmp, vectors, docids, config, meta)
    logger.info("merged %d shards into %s (%d documents)", shard_num, target, len(docids))
    return DenseIndexInfo(target, meta)


def encode_queries(topics: Sequence[Topic], encoder: Any) -> np.ndarray:
    """``(n, d)`` float32 query matrix from a Pyserini-shaped query encoder (``encode_batch`` if it has one)."""
    texts = [topic.text for topic in topics]
    if hasattr(encoder, "encode_batch"):
        return np.asarray(encoder.encode_batch(texts), dtype=np.float32)
    return np.stack([np.asarray(encoder.encode(text), dtype=np.float32) for text in texts])


def search_dense(
    index_dir: str | os.PathLike,
    qids: Sequence[str],
    queries: np.ndarray,
    k: int = 1000,
    threads: int = 1,
    ef_search: int | None = None,
) -> Hits:
    """Top-``k`` inner-product hits per query with Pyserini's ``FaissSearcher.batch_search``.

    Args:
        qids: query ids, one per row of ``queries``.
        queries: ``(n, d)`` float32 query embeddings (see :func:`encode_queries`).
        ef_search: HNSW search beam (``FaissSearcher.set_hnsw_ef_search``); ignored for flat indexes.

    Returns:
        ``{qid: [(docid, score), ...]}`` best first, every qid present.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    qids = [str(q) for q in qids]
    if len(set(qids)) != len(qids):
        raise ValueError("duplicate qids")
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if queries.ndim != 2 or queries.shape[0] != len(qids):
        raise ValueError(f"queries must be (len(qids)={len(qids)}, d), got shape {queries.shape}")
    meta = read_index_meta(index_dir)
    if meta is not None and meta.dim != queries.shape[1]:
        raise ValueError(f"{index_dir} holds {meta.dim}-d vectors of {meta.model}, queries are {queries.shape[1]}-d")
    from clir_eval.jvm import ensure_jvm

    ensure_jvm()  # pyserini.search.faiss imports the Lucene searcher, which needs Java
    from pyserini.search.faiss import FaissSearcher

    searcher = FaissSearcher(str(index_dir), None)
    if ef_search is not None and hasattr(searcher.index, "hnsw"):
        searcher.set_hnsw_ef_search(ef_search)
    if not qids:
        return {}
    # batch_search calls faiss.omp_set_num_threads(threads) itself and leaves it so.
    with faiss_threads(threads):
        found = searcher.batch_search(queries, qids, k=min(k, searcher.num_docs), threads=threads)
    return {qid: [(hit.docid, float(hit.score)) for hit in found[qid]] for qid in qids}


def write_encoded_queries(directory: str | os.PathLike, texts: Sequence[str], vectors: np.ndarray) -> Path:
    """Save query embeddings in Pyserini's encoded-queries layout (``embedding.pkl``: a pandas DataFrame with
    ``text`` and ``embedding`` columns), which ``python -m pyserini.search.faiss --encoded-queries DIR`` reads.

    Pyserini looks a query up by its text, so equal texts must have equal vectors. Avoid ``bpr`` in the
    directory name: Pyserini then picks its binary (BPR) encoder by substring.
    """
    import pandas as pd

    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] != len(texts):
        raise ValueError(f"need one vector per text: {len(texts)} texts, vectors of shape {vectors.shape}")
    if "bpr" in str(directory):
        raise ValueError(f"{directory}: Pyserini treats any path containing 'bpr' as BPR encoded queries")
    seen: dict[str, np.ndarray] = {}
    for text, vector in zip(texts, vectors):
        if text in seen and not np.array_equal(seen[text], vector):
            raise ValueError(f"query text {text!r} occurs twice with different vectors")
        seen[text] = vector
    frame = pd.DataFrame({"text": list(seen), "embedding": [v for v in seen.values()]})
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_write(directory / "embedding.pkl", mode="wb", encoding=None) as handle:
        frame.to_pickle(handle)
    return directory
