"""Fusion of runs (the ``hybrid`` system): reciprocal rank fusion and weighted sum of min-max scores.

Why not ``ranx.fuse``: ranx ranks each query's hits with ``np.argsort`` over its own arrays, so tied scores
(frequent in BM25 runs: Anserini rounds scores to 4 decimals) get ranks that differ from trec_eval's order
(score descending, docid descending), and RRF, which reads only ranks, then depends on that accident.
Here every rank comes from :func:`clir_eval.retrieval.runs.sort_hits`; on runs without ties the results
equal ``ranx.fuse(..., norm=None, method="rrf")`` and ``ranx.fuse(..., norm="min-max", method="wsum")``
(tested), so the formulas are ranx's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from clir_eval.retrieval.runs import sort_hits

FUSION_METHODS = ("rrf", "wsum")

#: ``{qid: [(docid, score), ...]}``.
Hits = dict[str, list[tuple[str, float]]]


@dataclass(frozen=True)
class FusionConfig:
    """How the ``hybrid`` system combines a sparse and a dense run.

    Attributes:
        method: ``"rrf"`` (Cormack et al., SIGIR 2009: ``sum_i 1 / (k + rank_i(d))``) or ``"wsum"``
            (``sum_i w_i * minmax_i(score_i(d))``, a document absent from a run adds 0).
        sparse: the BM25 system spec fused (e.g. ``"bm25-psq"``).
        dense: the dense system spec fused (e.g. ``"me5-small"``, ``"student:<path>"``).
        rrf_k: RRF's k (60 in the paper).
        weights: ``(sparse, dense)`` weights for ``wsum``.
        depth: hits per component run before fusion.
    """

    method: str = "rrf"
    sparse: str = "bm25-psq"
    dense: str = "me5-small"
    rrf_k: float = 60.0
    weights: tuple[float, float] = (0.5, 0.5)
    depth: int = 1000

    def __post_init__(self) -> None:
        if self.method not in FUSION_METHODS:
            raise ValueError(f"fusion method must be one of {FUSION_METHODS}, got {self.method!r}")
        if self.rrf_k < 0:
            raise ValueError(f"rrf_k must be >= 0, got {self.rrf_k}")
        if len(self.weights) != 2 or any(not math.isfinite(w) or w < 0 for w in self.weights):
            raise ValueError(f"weights must be two finite numbers >= 0, got {self.weights}")
        if self.depth < 1:
            raise ValueError(f"depth must be >= 1, got {self.depth}")
        object.__setattr__(self, "weights", tuple(float(w) for w in self.weights))


def rrf(runs: Sequence[Mapping[str, Sequence[tuple[str, float]]]], k: float = 60.0) -> Hits:
    """Reciprocal rank fusion: ``score(d) = sum_i 1 / (k + rank_i(d))``, ranks 1-based in trec_eval order.

    Cormack, Clarke & Buettcher, "Reciprocal rank fusion outperforms Condorcet and individual rank
    learning methods", SIGIR 2009. Queries are the union over runs.
    """
    fused: dict[str, dict[str, float]] = {}
    for run in runs:
        for qid, hits in run.items():
            scores = fused.setdefault(qid, {})
            for rank, (docid, _) in enumerate(sort_hits(hits), start=1):
                scores[docid] = scores.get(docid, 0.0) + 1.0 / (k + rank)
    return {qid: sort_hits(scores) for qid, scores in fused.items()}


def weighted_sum(runs: Sequence[Mapping[str, Sequence[tuple[str, float]]]], weights: Sequence[float]) -> Hits:
    """``score(d) = sum_i w_i * (s_i(d) - min_i) / max(max_i - min_i, 1e-9)`` per query (ranx's min-max,
    so a query whose hits all score the same normalises to 0); a document absent from run i adds 0."""
    if len(weights) != len(runs):
        raise ValueError(f"{len(runs)} runs but {len(weights)} weights")
    fused: dict[str, dict[str, float]] = {}
    for run, weight in zip(runs, weights):
        for qid, hits in run.items():
            scores = fused.setdefault(qid, {})
            values = [score for _, score in hits]
            if not values:
                continue
            low, high = min(values), max(values)
            for docid, score in hits:
                normed = (score - low) / max(high - low, 1e-9)
                scores[docid] = scores.get(docid, 0.0) + weight * normed
    return {qid: sort_hits(scores) for qid, scores in fused.items()}


def fuse(runs: Sequence[Mapping[str, Sequence[tuple[str, float]]]], config: FusionConfig) -> Hits:
    """Fuse ``runs`` (each truncated to ``config.depth`` in trec_eval order) with ``config.method``."""
    cut = [{qid: sort_hits(hits)[: config.depth] for qid, hits in run.items()} for run in runs]
    if config.method == "rrf":
        return rrf(cut, k=config.rrf_k)
    return weighted_sum(cut, config.weights)
