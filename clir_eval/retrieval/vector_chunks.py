"""Encoded document vectors on disk, one chunk of documents at a time: what makes dense indexing resumable.

A dense index is built in two steps (as Pyserini's ``encode`` then ``index`` do): the corpus stream is cut into
chunks of ``chunk_size`` consecutive documents; each chunk is encoded and written here as it is made
(``chunk-<i>.npy``: ``(n, d)`` float32, ``chunk-<i>.docids``: one docid a line), each file atomically; then the
Faiss index is filled from the chunks in order. A process killed half way loses at most the chunk it was encoding:
a rerun finds the complete chunks and encodes only the rest. Several processes (launcher ranks, or manual shards)
share one store and take the chunks ``i`` with ``i % world == rank``.

The store's ``store.json`` holds the key of what the vectors depend on (model, weights, encoder config, corpus,
chunk size); a store with another key is stale and is emptied before use. ``stream.json`` is written by whoever
reaches the end of the corpus: the number of documents and chunks, so the index can check it has them all.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clir_eval.io import atomic_write, build_lock, read_json_or_none

logger = logging.getLogger(__name__)

STORE_FILE = "store.json"
STREAM_FILE = "stream.json"


@dataclass(frozen=True)
class StreamInfo:
    """The corpus as the encoder saw it: document and chunk counts."""

    num_docs: int
    num_chunks: int


class VectorChunks:
    """A directory of encoded chunks keyed by what they were encoded from (see the module docstring)."""

    def __init__(self, path: str | os.PathLike, key: dict[str, Any]) -> None:
        self.path = Path(path)
        self.key = key

    @staticmethod
    def _name(index: int, suffix: str) -> str:
        return f"chunk-{index:07d}.{suffix}"

    def open(self) -> VectorChunks:
        """Create the store, or empty it when it holds vectors of another model, corpus or chunking."""
        with build_lock(self.path):  # ranks open the same store at once: one of them empties a stale one
            record = read_json_or_none(self.path / STORE_FILE)
            if record is not None and record != self.key:
                logger.info("%s holds vectors of another model, corpus or chunking: starting afresh", self.path)
                shutil.rmtree(self.path)
                record = None
            if record is None:
                self.path.mkdir(parents=True, exist_ok=True)
                for stale in self.path.iterdir():  # a store without a key: pieces of an unknown build
                    stale.unlink() if stale.is_file() else shutil.rmtree(stale)
                with atomic_write(self.path / STORE_FILE) as handle:
                    json.dump(self.key, handle, indent=2, sort_keys=True)
        return self

    def has(self, index: int) -> bool:
        """Whether chunk ``index`` is complete (its vectors are written last, so they mark completion)."""
        return (self.path / self._name(index, "npy")).is_file()

    def write(self, index: int, vectors: np.ndarray, docids: list[str]) -> None:
        """Write chunk ``index`` (docids first, then the vectors that mark it complete)."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(docids):
            raise ValueError(f"chunk {index}: {len(docids)} docids but vectors of shape {vectors.shape}")
        with atomic_write(self.path / self._name(index, "docids")) as handle:
            handle.writelines(f"{docid}\n" for docid in docids)
        with atomic_write(self.path / self._name(index, "npy"), mode="wb", encoding=None) as handle:
            np.save(handle, vectors, allow_pickle=False)

    def docids(self, index: int) -> list[str]:
        return (self.path / self._name(index, "docids")).read_text(encoding="utf-8").splitlines()

    def vectors(self, index: int, mmap: bool = False) -> np.ndarray:
        """``(n, d)`` float32 vectors of chunk ``index`` (memory-mapped when ``mmap``: no copy in memory)."""
        return np.load(self.path / self._name(index, "npy"), mmap_mode="r" if mmap else None, allow_pickle=False)

    def finish_stream(self, info: StreamInfo) -> None:
        """Record that the corpus ends after ``info.num_docs`` documents in ``info.num_chunks`` chunks."""
        with atomic_write(self.path / STREAM_FILE) as handle:
            json.dump({"num_docs": info.num_docs, "num_chunks": info.num_chunks}, handle)

    def stream_info(self) -> StreamInfo | None:
        record = read_json_or_none(self.path / STREAM_FILE)
        return StreamInfo(int(record["num_docs"]), int(record["num_chunks"])) if isinstance(record, dict) else None

    def missing(self) -> list[int]:
        """Chunks not yet encoded (all of them while no process has reached the end of the corpus)."""
        info = self.stream_info()
        if info is None:
            raise FileNotFoundError(f"{self.path}: no process has encoded the whole corpus yet (no {STREAM_FILE})")
        return [i for i in range(info.num_chunks) if not self.has(i)]

    def iter_chunks(self, mmap: bool = True) -> Iterator[tuple[np.ndarray, list[str]]]:
        """``(vectors, docids)`` of every chunk in corpus order; fails when one is missing."""
        missing = self.missing()
        if missing:
            raise FileNotFoundError(f"{self.path}: {len(missing)} chunk(s) not encoded yet, e.g. {missing[:5]}")
        for index in range(self.stream_info().num_chunks):  # type: ignore[union-attr]
            yield self.vectors(index, mmap=mmap), self.docids(index)

    def sample(self, size: int, seed: int) -> np.ndarray:
        """A seeded uniform sample of ``size`` vectors (all of them if fewer), read chunk by chunk."""
        info = self.stream_info()
        assert info is not None
        rng = np.random.default_rng(seed)
        chosen = np.sort(rng.choice(info.num_docs, size=min(size, info.num_docs), replace=False))
        parts, offset = [], 0
        for index in range(info.num_chunks):
            vectors = self.vectors(index, mmap=True)
            inside = chosen[(chosen >= offset) & (chosen < offset + len(vectors))] - offset
            if len(inside):
                parts.append(np.asarray(vectors[inside], dtype=np.float32))
            offset += len(vectors)
        return np.concatenate(parts)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
