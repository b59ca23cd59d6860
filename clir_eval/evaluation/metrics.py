"""Metric names, parsed in one place, and their per-query computation with trec_eval's semantics.

Names follow ranx (``map``, ``ndcg@10``, ``precision@10``, ``recall@100``, ``mrr``, ``r-precision``, ...);
each one maps to the trec_eval measure it reproduces. Most are computed by ranx's numba kernels, fed
arrays that we build ourselves (see :func:`ranx_inputs`) because ranx's own conversion hashes doc ids to
float64 and leaves score ties to ``np.argsort``; ``bpref`` is computed by pytrec_eval (trec_eval's C code)
because ranx's bpref is a different definition (see ``docs/evaluation.md``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Callable

import numpy as np

#: Relevance level from which a judgement counts as relevant in binary measures (trec_eval ``-l1``).
RELEVANCE_LEVEL = 1


@dataclass(frozen=True)
class MetricSpec:
    """A parsed metric name.

    Attributes:
        name: canonical ranx-style name (``"ndcg@10"``).
        base: the name without cutoff (``"ndcg"``).
        k: cutoff, 0 = whole ranking.
        trec_eval: the trec_eval / pytrec_eval measure it equals (``"ndcg_cut_10"``); for ``mrr@k``, which
            trec_eval lacks, ``"recip_rank"`` over the ranking truncated at ``k``.
        backend: ``"ranx"`` or ``"pytrec_eval"``.
    """

    name: str
    base: str
    k: int
    trec_eval: str
    backend: str


# base name -> (needs cutoff: "required" | "optional" | "never", trec_eval name without / with cutoff, backend)
_METRICS: dict[str, tuple[str, str, str, str]] = {
    "map": ("optional", "map", "map_cut_{k}", "ranx"),
    "ndcg": ("optional", "ndcg", "ndcg_cut_{k}", "ranx"),
    "precision": ("optional", "set_P", "P_{k}", "ranx"),
    "recall": ("optional", "set_recall", "recall_{k}", "ranx"),
    "mrr": ("optional", "recip_rank", "recip_rank", "ranx"),
    "r-precision": ("never", "Rprec", "", "ranx"),
    "hit_rate": ("required", "", "success_{k}", "ranx"),
    "bpref": ("never", "bpref", "", "pytrec_eval"),
}

_NAME = re.compile(r"^(?P<base>[a-z_-]+)(?:@(?P<k>.*))?$", re.DOTALL)
#: The largest cutoff: trec_eval reads cutoffs as C ints, and the metric kernels index with 32-bit ints.
MAX_CUTOFF = 2**31 - 1


def _short(name: object) -> str:
    """``repr(name)`` cut to a readable length (a metric name comes from user input)."""
    from clir_eval.io import short_repr

    return short_repr(name)


def valid_metric_names() -> list[str]:
    """Human-readable list of accepted names, e.g. ``["map", "map@k", ...]``."""
    names = []
    for base, (cutoff, *_rest) in _METRICS.items():
        if cutoff in ("optional", "never"):
            names.append(base)
        if cutoff in ("optional", "required"):
            names.append(f"{base}@k")
    return names


def parse_metric(name: str) -> MetricSpec:
    """Parse a ranx-style metric name.

    Raises:
        ValueError: unknown name, a cutoff where none is allowed (or missing where required), or ``k < 1``;
            the message lists the valid names.
    """
    match = _NAME.match(name.strip()) if isinstance(name, str) else None
    valid = ", ".join(valid_metric_names())
    if match is None or match["base"] not in _METRICS:
        raise ValueError(f"unknown metric {_short(name)}; valid metrics: {valid}")
    base = match["base"]
    cutoff, plain, cut, backend = _METRICS[base]
    if match["k"] is None:
        if cutoff == "required":
            raise ValueError(f"metric {name!r} needs a cutoff, e.g. {base}@10; valid metrics: {valid}")
        return MetricSpec(name=base, base=base, k=0, trec_eval=plain, backend=backend)
    if cutoff == "never":
        raise ValueError(f"metric {base!r} takes no cutoff; valid metrics: {valid}")
    text = match["k"]
    # ASCII digits only: int() would also take "1_0" and non-ASCII digits, which trec_eval's atoi reads otherwise.
    k = int(text) if text.isascii() and text.isdigit() and len(text) <= len(str(MAX_CUTOFF)) else None
    if k is None or not 1 <= k <= MAX_CUTOFF:
        raise ValueError(f"metric {_short(name)}: the cutoff must be an integer from 1 to {MAX_CUTOFF}; "
                         f"valid metrics: {valid}")
    return MetricSpec(name=f"{base}@{k}", base=base, k=k, trec_eval=cut.format(k=k), backend=backend)


def parse_metrics(names: Sequence[str]) -> list[MetricSpec]:
    """Parse several names, dropping repeats (first occurrence kept). Raises ValueError on an empty list."""
    specs: dict[str, MetricSpec] = {}
    for name in names:
        spec = parse_metric(name)
        specs.setdefault(spec.name, spec)
    if not specs:
        raise ValueError(f"no metric given; valid metrics: {', '.join(valid_metric_names())}")
    return list(specs.values())


def _ranx_kernel(base: str) -> Callable[..., np.ndarray]:
    """The public ranx metric function for ``base``: ``f(qrels, run, k, rel_lvl) -> per-query ndarray``."""
    from ranx import metrics as rm

    kernels: dict[str, Callable[..., np.ndarray]] = {
        "map": rm.average_precision,
        "ndcg": rm.ndcg,  # Järvelin & Kekäläinen gains (gain = relevance), trec_eval's ndcg
        "precision": rm.precision,
        "recall": rm.recall,
        "mrr": rm.reciprocal_rank,
        "hit_rate": rm.hit_rate,
    }
    if base == "r-precision":
        return lambda qrels, run, k, rel_lvl: rm.r_precision(qrels, run, rel_lvl)
    return kernels[base]


@dataclass(frozen=True)
class RankedQuery:
    """One query's judgements and ranking, ready for the metric kernels (built by
    :func:`clir_eval.evaluation.evaluate.rank_run`).

    Attributes:
        qrels: ``(m, 2)`` float64 ``[doc code, relevance]``, relevance descending (ranx's ideal ordering).
        ranking: ``(n, 2)`` float64 ``[doc code, n - rank]``, best first (trec_eval order); a doc code
            equals a judged document's code only for the same docid.
    """

    qrels: np.ndarray
    ranking: np.ndarray


def ranx_per_query(specs: Sequence[MetricSpec], queries: Sequence[RankedQuery]) -> dict[str, np.ndarray]:
    """Run ranx's kernels for ``specs`` (ranx backend only) over ``queries``; ``{name: (len(queries),)}``.

    Every query must have at least one retrieved document and one relevant judgement: ranx's kernels read
    ``run[i]`` for ``i < k`` without bounds checks on empty rankings, and trec_eval's value is 0 in both
    cases anyway, so the caller fills those in.
    """
    import warnings

    from numba.core.errors import NumbaTypeSafetyWarning
    from numba.typed import List as TypedList

    out: dict[str, np.ndarray] = {}
    if not queries:
        return {spec.name: np.zeros(0) for spec in specs if spec.backend == "ranx"}
    qrels_list = TypedList([q.qrels for q in queries])
    run_list = TypedList([q.ranking for q in queries])
    for spec in specs:
        if spec.backend != "ranx":
            continue
        k = spec.k
        with warnings.catch_warnings():
            # numba's note, when it compiles ranx's r_precision, on a uint64 count cast to int64: harmless at
            # any run size, and printed on stderr beside our own output.
            warnings.simplefilter("ignore", NumbaTypeSafetyWarning)
            values = _ranx_kernel(spec.base)(qrels_list, run_list, k, RELEVANCE_LEVEL)
        out[spec.name] = np.asarray(values, dtype=np.float64)
    return out


def pytrec_eval_per_query(
    specs: Sequence[MetricSpec],
    qrels: Mapping[str, Mapping[str, int]],
    rankings: Mapping[str, Sequence[str]],
) -> dict[str, dict[str, float]]:
    """trec_eval's own numbers, via pytrec_eval, for ``specs`` with the pytrec_eval backend.

    Args:
        qrels: judgements of the queries to evaluate.
        rankings: trec_eval-ordered docids per query (scores are re-derived from ranks, so ties are gone).

    Returns:
        ``{metric name: {qid: value}}`` for the queries in both ``qrels`` and ``rankings``.
    """
    import pytrec_eval

    wanted = [spec for spec in specs if spec.backend == "pytrec_eval"]
    if not wanted:
        return {}
    run = {
        qid: {docid: float(len(docids) - rank) for rank, docid in enumerate(docids)}
        for qid, docids in rankings.items()
        if docids and qid in qrels
    }
    judged = {qid: dict(judgements) for qid, judgements in qrels.items()}
    evaluator = pytrec_eval.RelevanceEvaluator(judged, {spec.trec_eval for spec in wanted})
    scores = evaluator.evaluate(run)
    return {spec.name: {qid: values[spec.trec_eval] for qid, values in scores.items()} for spec in wanted}
