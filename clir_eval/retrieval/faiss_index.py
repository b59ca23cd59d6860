"""Faiss indexes named the Faiss way: an ``index_factory`` string, inner product, trained on a sample.

``"Flat"`` is exact search; ``"HNSW32"`` a graph; ``"IVF4096,Flat"``, ``"IVF4096,PQ64"``, ``"IVF1024,SQ8"`` inverted
lists with raw, product-quantised or scalar-quantised codes; a ``,Refine(SQ8)`` or ``,RFlat`` suffix re-scores the
first stage's candidates with finer codes (``"IVF4096,PQ64x4fs,Refine(SQ8)"``: fast-scan PQ, then 8-bit scores).
Indexes that need training (IVF, PQ, SQ) are trained on a seeded sample of the encoded vectors, then filled chunk by
chunk, so memory is the index plus one chunk. The search-time knobs are ``nprobe`` (IVF), ``efSearch`` (HNSW) and
``k_factor`` (a refined index: candidates re-scored per hit), set by :func:`set_search_params`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


def check_factory(factory: str, dim: int) -> None:
    """Raise ``ValueError`` naming the string when Faiss cannot build ``factory`` for ``dim``-d vectors.

    Called before encoding starts, so a typo costs nothing (the vectors are encoded only once it passes).
    """
    import faiss

    try:
        faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:  # Faiss raises RuntimeError with its C++ message
        message = str(exc).strip().splitlines()[-1] if str(exc).strip() else "rejected"
        message = message.rsplit("Error: ", 1)[-1]  # Faiss's own words, without its C++ source location
        raise ValueError(f"Faiss index_factory cannot build {factory!r} for {dim}-d vectors: {message}") from None


def training_size(factory: str, dim: int) -> int | None:
    """How many vectors the index wants to be trained on (None: it needs no training).

    Faiss warns below 39 points per IVF centroid and PQ wants 256 per code: ask for 64 per centroid, at least
    10,000 when there are codes to learn, capped at 262,144 (a 1M-document corpus trains on a quarter of it).
    """
    import faiss

    index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    if index.is_trained:
        return None
    ivf = _ivf(index)
    wanted = 64 * ivf.nlist if ivf is not None else 0
    return min(max(wanted, 10_000), 262_144)


def _ivf(index: Any) -> Any:
    import faiss

    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:  # not an IVF index
        return None


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


def build_index(factory: str, dim: int, chunks: Iterator[np.ndarray], train: np.ndarray | None, threads: int,
                hnsw_ef_construction: int | None = None) -> Any:
    """A Faiss inner-product index from ``factory``, trained on ``train`` if it needs it, filled from ``chunks``.

    Args:
        chunks: ``(n_i, dim)`` float32 arrays in corpus order (vector i of the index is document i).
        train: the training sample (ignored by indexes that need no training).
        threads: OpenMP threads for training and adding (HNSW inserts in parallel: with more than one thread
            its graph, and so its results, can differ from build to build).
        hnsw_ef_construction: the HNSW build beam (Faiss's default is 40).
    """
    import faiss

    check_factory(factory, dim)
    index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    hnsw = _hnsw(index)
    if hnsw is not None and hnsw_ef_construction is not None:
        hnsw.efConstruction = hnsw_ef_construction
    with faiss_threads(threads):
        if not index.is_trained:
            if train is None or len(train) == 0:
                raise ValueError(f"{factory!r} needs training vectors")
            ivf = _ivf(index)
            if ivf is not None and len(train) < ivf.nlist:
                raise ValueError(f"{factory!r} has {ivf.nlist} lists but only {len(train)} vectors to train them: "
                                 f"use fewer lists (IVF<n> with n <= {len(train)})")
            logger.info("training %s on %d vectors", factory, len(train))
            index.train(np.ascontiguousarray(train, dtype=np.float32))
        for vectors in chunks:
            index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return index


def _refine(index: Any) -> Any:
    """The ``IndexRefine`` that ``index`` is (``...,Refine(...)`` or ``...,RFlat``), or None."""
    import faiss

    inner = faiss.downcast_index(index)
    return inner if isinstance(inner, faiss.IndexRefine) else None


def _hnsw(index: Any) -> Any:
    import faiss

    inner = faiss.downcast_index(index)
    return getattr(inner, "hnsw", None)


def set_search_params(index: Any, nprobe: int | None = None, ef_search: int | None = None,
                      k_factor: int | None = None) -> None:
    """Set the search knobs that apply to ``index``: ``nprobe`` of an IVF index, ``efSearch`` of an HNSW one,
    ``k_factor`` of a refined one (it asks its first stage for ``k * k_factor`` candidates and re-scores them)."""
    refine = _refine(index)
    if refine is not None and k_factor is not None:
        refine.k_factor = float(k_factor)
    ivf = _ivf(index)
    if ivf is not None and nprobe is not None:
        ivf.nprobe = min(nprobe, ivf.nlist)
    hnsw = _hnsw(index)
    if hnsw is not None and ef_search is not None:
        hnsw.efSearch = ef_search
