"""Dense retrieval the Pyserini way: encode the English corpus into a Faiss index, search it with ``FaissSearcher``.

An index directory has Pyserini's own layout, two plain files that ``FaissSearcher`` (and so
``python -m pyserini.search.faiss --index DIR``) reads unchanged:

* ``index``: ``faiss.write_index`` of an inner-product index named by a Faiss ``index_factory`` string
  (``Flat``, ``HNSW32``, ``IVF4096,PQ64``, ...: :mod:`clir_eval.retrieval.faiss_index`);
* ``docid``: one docid per line, line i = vector i.

Beside them, ``clir_eval_index.json`` records what built the index (model, its encoder config and a
fingerprint of its weights, the corpus SHA-256, the factory string); :func:`build_dense_index` reuses an index
whose record matches and rebuilds otherwise.

Building streams, as Pyserini's encoder does (reader -> batches -> encoder -> writer): the corpus is read once,
in chunks of ``chunk_size`` documents; each chunk is tokenised, encoded and written to disk as it is made
(:mod:`clir_eval.retrieval.vector_chunks`, ``<index_dir>.vectors/``), so memory holds one chunk, and a killed
build resumes from its last complete chunk. Then the Faiss index is filled from the chunks. Several processes
(``torchrun`` / ``accelerate launch`` ranks, or manual shards) encode the chunks ``i % world == rank`` into the
same store, and one of them builds the index (:func:`encode_corpus`, :func:`finalize_dense_index`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from clir_eval.collections.records import Document, Topic
from clir_eval.io import atomic_directory, atomic_write, build_lock, read_json_or_none, sha256_file
from clir_eval.retrieval.faiss_index import faiss_threads, set_search_params
from clir_eval.retrieval.vector_chunks import StreamInfo, VectorChunks

logger = logging.getLogger(__name__)

INDEX_FILE = "index"
DOCID_FILE = "docid"
META_FILE = "clir_eval_index.json"
DENSE_FORMAT = "clir-eval-dense-index/2"
#: Shorthands for the two most common factory strings; any other index is named by its factory string.
INDEX_KINDS = ("flat", "hnsw")
# Files whose bytes define a model directory (weights, configs, tokenizer); other files (READMEs, ONNX
# exports) do not change the embeddings we compute.
_MODEL_FILE_SUFFIXES = (".safetensors", ".bin", ".json", ".txt", ".model")

#: ``{qid: [(docid, score), ...]}`` best first.
Hits = dict[str, list[tuple[str, float]]]


@dataclass(frozen=True)
class DenseIndexConfig:
    """How to build and search a dense index.

    Attributes:
        kind: ``"flat"`` (exact inner product, ``Flat``) or ``"hnsw"`` (``HNSW<hnsw_m>``); ignored when
            ``factory`` is given.
        factory: any Faiss ``index_factory`` string (``"IVF4096,PQ64"``, ``"IVF1024,SQ8"``, ``"HNSW32"``).
        hnsw_m: HNSW neighbours per node (for ``kind="hnsw"``).
        hnsw_ef_construction: HNSW build-time beam.
        hnsw_ef_search: HNSW search-time beam used by the systems (Faiss's default, 16, loses recall).
        nprobe: IVF lists visited per query at search time.
        refine_k_factor: candidates per hit that a refined index (``...,Refine(SQ8)``, ``...,RFlat``) re-scores at
            search time. Faiss's own default, 1, only re-orders the first stage's top k, so it cannot raise recall.
        train_sample: vectors an IVF/PQ/SQ index is trained on (None: what the index asks for,
            :func:`~clir_eval.retrieval.faiss_index.training_size`), drawn with ``seed``.
        batch_size: documents per encoder batch.
        batch_tokens: padded tokens per encoder batch at most (None: the encoder's default for its device, 4,096 on
            a CPU, which keeps a batch's activations in the CPU's cache).
        chunk_size: documents encoded and written to disk together: the memory bound and what a killed
            build can lose. Chunks are length-sorted inside, so batches carry little padding.
        build_threads: Faiss threads for training and adding (0: all cores). HNSW inserts in parallel,
            so with more than one thread its graph (and its results) can differ from build to build;
            flat and IVF indexes are the same whatever the count.
        keep_vectors: keep the encoded chunks after the index is built (to build other kinds from the same
            encoding without encoding again).
        vectors: where the encoded chunks live (default ``<index_dir>.vectors``); point another index's build
            at a kept encoding to build it without encoding again.
        backend: what runs the document encoder when the index is built: ``"torch"``, or ``"openvino"`` (CPU,
            fp32, several batches at once; the ``openvino`` extra). Both give the same vectors to float32 rounding,
            so the backend is not part of the index's identity: an index built by one is reused by the other.
    """

    kind: str = "flat"
    factory: str | None = None
    hnsw_m: int = 32
    hnsw_ef_construction: int = 200
    hnsw_ef_search: int = 128
    nprobe: int = 64
    refine_k_factor: int = 4
    train_sample: int | None = None
    seed: int = 0
    batch_size: int = 64
    batch_tokens: int | None = None
    chunk_size: int = 2048
    build_threads: int = 0
    keep_vectors: bool = False
    vectors: str | None = None
    backend: str = "torch"

    def __post_init__(self) -> None:
        from clir_eval.models.openvino_backbone import check_backend

        check_backend(self.backend)
        if self.factory is None and self.kind not in INDEX_KINDS:
            raise ValueError(f"index kind must be one of {INDEX_KINDS} (or give a Faiss factory string), "
                             f"got {self.kind!r}")
        if self.factory is not None and (not isinstance(self.factory, str) or not self.factory.strip()):
            raise ValueError(f"factory must be a Faiss index_factory string, got {self.factory!r}")
        for name in ("hnsw_m", "hnsw_ef_construction", "hnsw_ef_search", "nprobe", "refine_k_factor", "batch_size",
                     "chunk_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.build_threads < 0:
            raise ValueError(f"build_threads must be >= 0 (0: all cores), got {self.build_threads}")
        if self.batch_tokens is not None and self.batch_tokens < 1:
            raise ValueError(f"batch_tokens must be >= 1, got {self.batch_tokens}")
        if self.train_sample is not None and self.train_sample < 1:
            raise ValueError(f"train_sample must be >= 1, got {self.train_sample}")

    @property
    def factory_string(self) -> str:
        """The Faiss ``index_factory`` string this config builds."""
        if self.factory is not None:
            return self.factory
        return "Flat" if self.kind == "flat" else f"HNSW{self.hnsw_m}"

    @property
    def threads(self) -> int:
        return self.build_threads or os.cpu_count() or 1

    def run_settings(self) -> dict[str, Any]:
        """Every setting but those that cannot change a search's hits, for a cached run's key: the backend is left
        out, since both build the same index (to float32 rounding) and either reuses the other's."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "backend"}

    def index_params(self) -> dict[str, Any]:
        """The settings that change the index contents (batch size, threads and search knobs do not)."""
        params: dict[str, Any] = {"factory": self.factory_string}
        if "HNSW" in self.factory_string:
            params["hnsw_ef_construction"] = self.hnsw_ef_construction
        if self.train_sample is not None:
            params["train_sample"] = self.train_sample
        if "IVF" in self.factory_string or "PQ" in self.factory_string or "SQ" in self.factory_string:
            params["seed"] = self.seed
        return params


@dataclass(frozen=True)
class DenseIndexMeta:
    """``clir_eval_index.json``: the record of what built a dense index, read back to reuse the index when a build
    asks for the same thing, and to check the queries' dimension."""

    format: str
    corpus_sha256: str
    model: str
    encoder: dict[str, Any]  # the model's EncoderConfig
    model_sha256: str | None  # model_fingerprint(); None for a hub id
    index: dict[str, Any]  # DenseIndexConfig.index_params()
    num_docs: int
    dim: int
    corpus_num_docs: int
    encoded_by: int = 1  # processes that shared the encoding

    @classmethod
    def from_dict(cls, record: Any) -> DenseIndexMeta | None:
        """The record of a parsed ``clir_eval_index.json``; None if it lacks a field (another format: rebuild)."""
        if not isinstance(record, dict) or any(f.name not in record for f in fields(cls) if f.default is MISSING):
            return None
        return cls(**{f.name: record[f.name] for f in fields(cls) if f.name in record})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

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


def vectors_dir(index_dir: str | os.PathLike, config: DenseIndexConfig | None = None) -> Path:
    """Where the encoded chunks of ``index_dir`` are written while it is built: ``config.vectors`` when set, else
    ``<index_dir>.vectors``."""
    if config is not None and config.vectors is not None:
        return Path(config.vectors)
    index_dir = Path(index_dir)
    return index_dir.with_name(f"{index_dir.name}.vectors")


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


def documents_sha256(documents: Iterable[Document]) -> str:
    """SHA-256 of documents' ids, titles and contents (for an in-memory corpus; a collection hashes its files)."""
    digest = hashlib.sha256()
    for doc in documents:
        for part in (doc.docid, doc.title, doc.contents):
            encoded = part.encode("utf-8")
            digest.update(len(encoded).to_bytes(8, "little"))
            digest.update(encoded)
    return digest.hexdigest()


def read_index_meta(index_dir: str | os.PathLike) -> DenseIndexMeta | None:
    """The record of what built a dense index, or None if it has none or an unreadable one."""
    return DenseIndexMeta.from_dict(read_json_or_none(Path(index_dir) / META_FILE))


def _check_docid(docid: str) -> None:
    # FaissSearcher reads the docid file line by line and strips the right end.
    if not docid or docid != docid.strip() or "\n" in docid or "\r" in docid:
        raise ValueError(f"docid {docid!r} cannot be stored one per line (empty, or has line breaks/edge spaces)")


def encode_documents(documents: Sequence[Document], encoder: Any) -> np.ndarray:
    """Embed documents with a Pyserini-shaped ``DocumentEncoder`` (``encode(texts, titles=None) -> (n, d)``)."""
    texts = [doc.contents for doc in documents]
    titles = [doc.title for doc in documents] if any(doc.title for doc in documents) else None
    return np.asarray(encoder.encode(texts, titles=titles), dtype=np.float32)


def _chunks(documents: Iterable[Document], size: int) -> Iterator[list[Document]]:
    chunk: list[Document] = []
    for doc in documents:
        chunk.append(doc)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _store_key(corpus_sha256: str, described: dict[str, Any], chunk_size: int) -> dict[str, Any]:
    """What the encoded chunks depend on (not the index kind: one encoding serves flat, HNSW and IVF alike)."""
    return {"format": DENSE_FORMAT, "corpus_sha256": corpus_sha256, **described, "chunk_size": chunk_size}


def encode_corpus(
    documents: Iterable[Document],
    model: str,
    index_dir: str | os.PathLike,
    config: DenseIndexConfig = DenseIndexConfig(),
    *,
    corpus_sha256: str,
    encoder: Any = None,
    part: tuple[int, int] = (0, 1),
    corpus_size: int | None = None,
    show_progress: bool = False,
) -> StreamInfo:
    """Encode this process's chunks of the corpus into ``<index_dir>.vectors`` (skipping those already there).

    Args:
        documents: the English corpus stream, in its order (every process reads the same stream).
        corpus_sha256: what identifies the corpus (a collection's file hash, or :func:`documents_sha256`).
        part: ``(rank, world)``: encode the chunks ``i`` with ``i % world == rank``.
        corpus_size: number of documents, if known (for the progress ETA only).

    Returns:
        The stream's document and chunk counts.
    """
    rank, world = part
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"need 0 <= rank < world, got rank={rank} world={world}")
    if encoder is None:
        from clir_eval.models.pyserini_adapters import DocumentEncoder

        encoder = DocumentEncoder(model, batch_size=config.batch_size, batch_tokens=config.batch_tokens,
                                  backend=config.backend)
    store = VectorChunks(vectors_dir(index_dir, config), _store_key(corpus_sha256, describe_model(model), config.chunk_size))
    store.open()
    from clir_eval.progress import progress

    total = None if corpus_size is None else corpus_size // world
    num_docs = num_chunks = encoded = 0
    label = f"encoding {Path(str(model)).name}" + (f" (part {rank + 1} of {world})" if world > 1 else "")
    with progress(label, total=total, unit="docs", show=show_progress) as report:
        for number, chunk in enumerate(_chunks(documents, config.chunk_size)):
            num_docs += len(chunk)
            num_chunks = number + 1
            if number % world != rank:
                continue
            if store.has(number):  # done by an earlier, interrupted build
                report.skip(len(chunk))
                continue
            docids = [doc.docid for doc in chunk]
            for docid in docids:
                _check_docid(docid)
            vectors = encode_documents(chunk, encoder)
            if not np.isfinite(vectors).all():
                raise ValueError(f"{model}: non-finite embeddings for documents {docids[0]}..{docids[-1]} "
                                 f"(chunk {number}); are the model's weights broken?")
            store.write(number, vectors, docids)
            encoded += len(chunk)
            report.advance(len(chunk))
    if num_docs == 0:
        raise ValueError("cannot index an empty corpus")
    info = StreamInfo(num_docs, num_chunks)
    store.finish_stream(info)
    logger.info("%s: encoded %d documents here, %d chunks in all", store.path, encoded, num_chunks)
    return info


def finalize_dense_index(index_dir: str | os.PathLike, config: DenseIndexConfig = DenseIndexConfig(),
                         encoded_by: int = 1) -> DenseIndexInfo:
    """Build ``index_dir`` (Pyserini layout, atomically) from its encoded chunks, in corpus order.

    Memory: the index itself, the training sample of an IVF/PQ/SQ index, and one chunk.
    """
    from clir_eval.retrieval.faiss_index import build_index, training_size

    import faiss

    target = Path(index_dir)
    store_path = vectors_dir(target, config)
    key = read_json_or_none(store_path / "store.json")
    if not isinstance(key, dict):
        raise FileNotFoundError(f"{store_path}: no encoded vectors to build {target} from")
    store = VectorChunks(store_path, key)
    missing = store.missing()
    if missing:
        raise ValueError(f"{store_path}: {len(missing)} chunk(s) not encoded yet (e.g. {missing[:5]}); "
                         f"run the missing parts first")
    stream = store.stream_info()
    assert stream is not None
    dim = int(store.vectors(0, mmap=True).shape[1])
    factory = config.factory_string
    wanted = training_size(factory, dim)
    train = store.sample(config.train_sample or wanted, config.seed) if wanted is not None else None
    meta = DenseIndexMeta(format=key["format"], corpus_sha256=key["corpus_sha256"], model=key["model"],
                          encoder=key["encoder"], model_sha256=key["model_sha256"], index=config.index_params(),
                          num_docs=stream.num_docs, dim=dim, corpus_num_docs=stream.num_docs, encoded_by=encoded_by)
    with atomic_directory(target) as tmp:
        with atomic_write(tmp / DOCID_FILE) as handle:
            for index in range(stream.num_chunks):
                handle.writelines(f"{docid}\n" for docid in store.docids(index))
        from clir_eval.progress import progress

        with progress(f"building {factory} index", total=stream.num_docs, unit="vectors", show=False) as report:
            def chunks() -> Iterator[np.ndarray]:
                for vectors, _ in store.iter_chunks():
                    yield vectors
                    report.advance(len(vectors))

            index = build_index(factory, dim, chunks(), train, config.threads,
                                hnsw_ef_construction=config.hnsw_ef_construction)
        faiss.write_index(index, str(tmp / INDEX_FILE))
        del index
        with atomic_write(tmp / META_FILE) as handle:
            json.dump(meta.to_dict(), handle, indent=2, sort_keys=True, ensure_ascii=False)
            handle.write("\n")
    if not config.keep_vectors:
        store.remove()
    logger.info("built dense index %s (%s, %s, %d documents, dim %d)", target, meta.model, factory, meta.num_docs, dim)
    return DenseIndexInfo(target, meta)


def build_dense_index(
    documents: Iterable[Document],
    model: str,
    index_dir: str | os.PathLike,
    config: DenseIndexConfig = DenseIndexConfig(),
    encoder: Any = None,
    force: bool = False,
    show_progress: bool = False,
    *,
    corpus_sha256: str | None = None,
    corpus_size: int | None = None,
    part: tuple[int, int] | None = None,
    barrier: Callable[[], None] | None = None,
) -> DenseIndexInfo:
    """Encode ``documents`` with ``model`` (built-in name, directory or hub id) into a Pyserini Faiss index.

    Args:
        documents: the English corpus, in its order (the order of ``docid``), read once as a stream.
        model: the encoder; recorded with its encoder config and weights fingerprint.
        index_dir: the index directory (built atomically; resumable through ``<index_dir>.vectors``).
        encoder: an already loaded Pyserini-shaped ``DocumentEncoder`` for ``model`` (loaded here if None).
        force: rebuild even when the directory records the same model, settings and corpus.
        corpus_sha256: the corpus's identity (a collection passes its files' hash); None hashes the documents,
            which are then held in memory (fine for an in-memory list, not for a 1M-document stream).
        part, barrier: ``(rank, world)`` of a launcher and its barrier: every rank encodes its chunks, rank 0
            builds the index, and the others wait for it.

    Returns:
        The index directory and its metadata (``reused`` when an existing index matched).
    """
    if corpus_sha256 is None:
        documents = documents if isinstance(documents, Sequence) else list(documents)
        corpus_sha256 = documents_sha256(documents)
    rank, world = part or (0, 1)
    if world > 1 and barrier is None:
        raise ValueError("several processes need a barrier to wait for each other")
    target = Path(index_dir)
    described = describe_model(model)
    wanted = {"format": DENSE_FORMAT, "corpus_sha256": corpus_sha256, **described, "index": config.index_params()}
    meta = read_index_meta(target)
    if not force and meta is not None and meta.matches(wanted):
        logger.info("reusing dense index %s (%s, %d documents)", target, meta.model, meta.num_docs)
        return DenseIndexInfo(target, meta, reused=True)
    if encoder is None:
        from clir_eval.models.pyserini_adapters import DocumentEncoder

        encoder = DocumentEncoder(model, batch_size=config.batch_size, batch_tokens=config.batch_tokens,
                                  backend=config.backend)
    dim = _encoder_dim(encoder)
    if dim is not None:  # a bad factory string costs no encoding (else it fails once the vectors are on disk)
        from clir_eval.retrieval.faiss_index import check_factory

        check_factory(config.factory_string, dim)
    if world == 1:
        with build_lock(target):  # a second process waits for this build and then reuses it
            meta = read_index_meta(target)
            if not force and meta is not None and meta.matches(wanted):
                return DenseIndexInfo(target, meta, reused=True)
            encode_corpus(documents, model, target, config, corpus_sha256=corpus_sha256, encoder=encoder,
                          corpus_size=corpus_size, show_progress=show_progress)
            return finalize_dense_index(target, config)
    encode_corpus(documents, model, target, config, corpus_sha256=corpus_sha256, encoder=encoder, part=(rank, world),
                  corpus_size=corpus_size, show_progress=show_progress)
    barrier()
    if rank == 0:
        finalize_dense_index(target, config, encoded_by=world)
    barrier()
    meta = read_index_meta(target)
    assert meta is not None
    return DenseIndexInfo(target, meta)


def _encoder_dim(encoder: Any) -> int | None:
    """The embedding size of a Pyserini-shaped document encoder, when its model says (None otherwise)."""
    dim = getattr(getattr(encoder, "model", None), "dim", None)
    return dim if isinstance(dim, int) else None


def read_vectors(index_dir: str | os.PathLike) -> tuple[np.ndarray, list[str]]:
    """All vectors (``(n, d)`` float32, in docid-file order) and docids of a flat or HNSW index directory."""
    import faiss

    index_dir = Path(index_dir)
    index = faiss.read_index(str(index_dir / INDEX_FILE))
    docids = (index_dir / DOCID_FILE).read_text(encoding="utf-8").splitlines()
    if len(docids) != index.ntotal:
        raise ValueError(f"{index_dir}: {index.ntotal} vectors but {len(docids)} docids")
    # IndexFlatIP and IndexHNSWFlat store the raw vectors and reconstruct them exactly (quantised ones do not).
    return index.reconstruct_n(0, index.ntotal).astype(np.float32, copy=False), docids


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
    nprobe: int | None = None,
    k_factor: int | None = None,
) -> Hits:
    """Top-``k`` inner-product hits per query with Pyserini's ``FaissSearcher.batch_search``.

    Args:
        qids: query ids, one per row of ``queries``.
        queries: ``(n, d)`` float32 query embeddings (see :func:`encode_queries`).
        ef_search: HNSW search beam; ignored by other indexes.
        nprobe: IVF lists visited per query; ignored by other indexes.
        k_factor: candidates per hit a refined index re-scores; ignored by other indexes.

    Returns:
        ``{qid: [(docid, score), ...]}`` best first, every qid present.
    """
    qids, queries = _checked_queries(qids, queries, k)  # before the index is read
    searcher = open_dense_searcher(index_dir, dim=queries.shape[1], ef_search=ef_search, nprobe=nprobe,
                                   k_factor=k_factor)
    return _search(searcher, qids, queries, k, threads)


def _checked_queries(qids: Sequence[str], queries: np.ndarray, k: int) -> tuple[list[str], np.ndarray]:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    qids = [str(q) for q in qids]
    if len(set(qids)) != len(qids):
        raise ValueError("duplicate qids")
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if queries.ndim != 2 or queries.shape[0] != len(qids):
        raise ValueError(f"queries must be (len(qids)={len(qids)}, d), got shape {queries.shape}")
    return qids, queries


def open_dense_searcher(index_dir: str | os.PathLike, dim: int | None = None, ef_search: int | None = None,
                        nprobe: int | None = None, k_factor: int | None = None) -> Any:
    """Pyserini's ``FaissSearcher`` on ``index_dir`` (the index read into memory once) with its search knobs set.

    Raises:
        ValueError: ``dim`` is not the index's dimension.
    """
    meta = read_index_meta(index_dir)
    if dim is not None and meta is not None and meta.dim != dim:
        raise ValueError(f"{index_dir} holds {meta.dim}-d vectors of {meta.model}, queries are {dim}-d")
    from clir_eval.jvm import ensure_jvm

    ensure_jvm()  # pyserini.search.faiss imports the Lucene searcher, which needs Java
    from pyserini.search.faiss import FaissSearcher

    searcher = FaissSearcher(str(index_dir), None)
    set_search_params(searcher.index, nprobe=nprobe, ef_search=ef_search, k_factor=k_factor)
    return searcher


def batch_search(searcher: Any, qids: Sequence[str], queries: np.ndarray, k: int = 1000, threads: int = 1) -> Hits:
    """Top-``k`` hits per query from a searcher of :func:`open_dense_searcher` (see :func:`search_dense`).

    The same hits as Pyserini's ``FaissSearcher.batch_search`` (its index, its docids, Faiss's order; a slot
    Faiss leaves empty, id -1, dropped), without its one result object per hit: at 1M documents that object
    building took up to three times as long as the search itself (docs/benchmarks.md, compressed indexes).
    """
    qids, queries = _checked_queries(qids, queries, k)
    return _search(searcher, qids, queries, k, threads)


def _search(searcher: Any, qids: list[str], queries: np.ndarray, k: int, threads: int) -> Hits:
    if not qids:
        return {}
    with faiss_threads(threads):
        scores, rows = searcher.index.search(queries, min(k, searcher.num_docs))
    docids = searcher.docids  # looked up per hit: no pass over the whole corpus's ids per search
    return {qid: [(docids[r], s) for r, s in zip(row, score) if r >= 0]
            for qid, row, score in zip(qids, rows.tolist(), scores.tolist())}


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
