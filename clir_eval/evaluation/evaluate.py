"""Evaluate runs against qrels with trec_eval's numbers: pure functions over in-memory dicts.

Which queries count (trec_eval 9.x, ``trec_eval.c``):

* Every qid that appears in the qrels is a query, including one whose judgements are all non-relevant
  (it scores 0 in every measure here, and counts in the mean: trec_eval does not skip it).
* Default (``judged_queries_only=False``) = ``trec_eval -c``: a qrels query missing from the run is
  evaluated as an empty ranking (0) and the mean is over all qrels queries.
* ``judged_queries_only=True`` = plain ``trec_eval``: the mean is over the queries in both run and qrels.
* Run queries without any judgement are ignored in both modes.

Score precision (``trec_eval_version``): trec_eval 9.x, which pytrec_eval wraps, keeps each score in a C
``float``, so scores equal at float32 precision tie (``0.5000000000000001`` and ``0.5``) and the tie breaks
by docid. That is the default (9). trec_eval 10.0 changed the score to ``double``; 10 compares the doubles.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from clir_eval.collections.records import Qrel
from clir_eval.evaluation.metrics import (
    RELEVANCE_LEVEL,
    MetricSpec,
    RankedQuery,
    parse_metrics,
    pytrec_eval_per_query,
    ranx_per_query,
)

logger = logging.getLogger(__name__)

#: The trec_eval whose score precision is reproduced: 9 (float32, pytrec_eval's) or 10 (double).
TREC_EVAL_VERSIONS = (9, 10)
DEFAULT_TREC_EVAL_VERSION = 9

Qrels = Mapping[str, Mapping[str, int]]
Run = Mapping[str, Mapping[str, float]]


def qrels_from_records(records: Iterable[Qrel]) -> dict[str, dict[str, int]]:
    """``[Qrel]`` → ``{qid: {docid: relevance}}``. Raises ValueError on a (qid, docid) judged twice."""
    qrels: dict[str, dict[str, int]] = {}
    for record in records:
        judgements = qrels.setdefault(record.qid, {})
        if record.docid in judgements:
            raise ValueError(f"qid {record.qid!r} judges docid {record.docid!r} twice")
        judgements[record.docid] = int(record.relevance)
    return qrels


@dataclass(frozen=True)
class EvaluationResult:
    """Per-query scores and means of several runs on one set of qrels.

    Attributes:
        qids: every qrels query, sorted; all per-query arrays are aligned on it.
        metrics: canonical metric names, in the order asked.
        per_query: ``{run: {metric: float64 (len(qids),)}}``; NaN marks a query that is not averaged
            (only with ``judged_queries_only``: the run did not retrieve for it).
        means: ``{run: {metric: mean}}`` over the non-NaN entries.
        num_queries: ``{run: number of queries averaged}``.
        judged_queries_only: the averaging mode (False = ``trec_eval -c``).
        trec_eval_version: the score precision ranked at (9: float32, 10: double).
    """

    qids: tuple[str, ...]
    metrics: tuple[str, ...]
    per_query: Mapping[str, Mapping[str, np.ndarray]]
    means: Mapping[str, Mapping[str, float]]
    num_queries: Mapping[str, int]
    judged_queries_only: bool
    trec_eval_version: int = DEFAULT_TREC_EVAL_VERSION

    @property
    def runs(self) -> tuple[str, ...]:
        """Run names in the order given."""
        return tuple(self.per_query)

    def to_dataframe(self) -> "pandas.DataFrame":  # noqa: F821
        """Means as a DataFrame: runs as rows, metrics as columns."""
        import pandas as pd

        return pd.DataFrame.from_dict(
            {run: dict(means) for run, means in self.means.items()}, orient="index", columns=list(self.metrics)
        )

    def to_json_dict(self, *, per_query: bool = False) -> dict:
        """``{run: {metric: mean}}`` at full precision; with ``per_query``, ``{run: {"mean": ..., "per_query":
        {qid: {metric: score}}}}`` over the averaged queries (a NaN query is left out, as trec_eval does)."""
        if not per_query:
            return {run: dict(self.means[run]) for run in self.runs}
        return {
            run: {
                "mean": dict(self.means[run]),
                "per_query": {qid: scores for qid, scores in self._averaged_queries(run)},
            }
            for run in self.runs
        }

    def trec_eval_lines(self) -> Iterator[str]:
        """``run<TAB>metric<TAB>qid<TAB>score`` per averaged query, then each metric's ``all`` line (``trec_eval -q``)."""
        for run in self.runs:
            for qid, scores in self._averaged_queries(run):
                for metric, value in scores.items():
                    yield f"{run}\t{metric}\t{qid}\t{value:.4f}"
            for metric in self.metrics:
                yield f"{run}\t{metric}\tall\t{self.means[run][metric]:.4f}"

    def _averaged_queries(self, run: str) -> Iterator[tuple[str, dict[str, float]]]:
        """``(qid, {metric: score})`` for each query the run's means average over."""
        by_metric = self.per_query[run]
        for i, qid in enumerate(self.qids):
            if not np.isnan(by_metric[self.metrics[0]][i]):
                yield qid, {metric: float(by_metric[metric][i]) for metric in self.metrics}

    def per_query_dataframe(self) -> "pandas.DataFrame":  # noqa: F821
        """Long per-query table: columns ``run, qid`` and one per metric (NaN rows dropped)."""
        import pandas as pd

        frames = []
        for run, by_metric in self.per_query.items():
            frame = pd.DataFrame({"run": run, "qid": list(self.qids), **{m: by_metric[m] for m in self.metrics}})
            frames.append(frame.dropna(subset=list(self.metrics), how="all"))
        return pd.concat(frames, ignore_index=True)


def evaluate_run(
    qrels: Qrels, run: Run, metrics: Sequence[str | MetricSpec], judged_queries_only: bool = False,
    trec_eval_version: int = DEFAULT_TREC_EVAL_VERSION,
) -> dict[str, np.ndarray]:
    """Per-query scores of one run, aligned on ``sorted(qrels)``; see the module docstring for the rules.

    Returns:
        ``{metric name: float64 (len(qrels),)}``, NaN for queries not averaged (``judged_queries_only``).
    """
    check_trec_eval_version(trec_eval_version)
    return _evaluate(prepare_qrels(qrels), qrels, run, _specs(metrics), judged_queries_only, trec_eval_version)


def check_trec_eval_version(version: int) -> int:
    """``version`` if it is one of :data:`TREC_EVAL_VERSIONS`; else ValueError naming them."""
    if isinstance(version, bool) or version not in TREC_EVAL_VERSIONS:
        raise ValueError(f"trec_eval version must be one of {', '.join(map(str, TREC_EVAL_VERSIONS))} (9: scores "
                         f"compared as float32, like pytrec_eval; 10: as doubles), got {version!r}")
    return int(version)


def _evaluate(
    prepared: "PreparedQrels", qrels: Qrels, run: Run, specs: Sequence[MetricSpec], judged_queries_only: bool,
    trec_eval_version: int = DEFAULT_TREC_EVAL_VERSION,
) -> dict[str, np.ndarray]:
    qids = prepared.qids
    unjudged = sum(1 for qid in run if qid not in qrels)
    if unjudged:
        logger.debug("%d run queries have no judgements and are ignored", unjudged)

    ranked = rank_run(prepared, run, trec_eval_version)
    retrieved = ranked.starts[1:] > ranked.starts[:-1]
    if not retrieved.any():
        logger.warning("the run retrieves for none of the %d judged queries (qid mismatch?)", len(qids))
    scores = {spec.name: np.zeros(len(qids), dtype=np.float64) for spec in specs}
    for name, values in ranx_per_query(specs, ranked.queries).items():
        scores[name][ranked.rows] = values
    if any(spec.backend == "pytrec_eval" for spec in specs):
        rankings = {
            qid: ranked.docids[ranked.starts[row]:ranked.starts[row + 1]].tolist()
            for row, qid in enumerate(qids) if retrieved[row]
        }
        for name, by_qid in pytrec_eval_per_query(specs, {q: qrels[q] for q in rankings}, rankings).items():
            for row, qid in enumerate(qids):
                if qid in by_qid:
                    scores[name][row] = by_qid[qid]

    if judged_queries_only:
        for values in scores.values():
            values[~retrieved] = np.nan
    return scores


@dataclass(frozen=True)
class PreparedQrels:
    """Qrels encoded once for ranx's kernels, shared by every run evaluated against them.

    Attributes:
        qids: every qrels query, sorted (the query axis of all results).
        vocabulary: ``{judged docid: code}``, exact small integers (not ranx's ``float(hash(id))``);
            retrieved docids that are not judged get -1, which matches nothing.
        judged_rows: indexes into ``qids`` of the queries with at least one relevant judgement.
        judgements: ``(m, 2)`` float64 ``[doc code, relevance]`` per judged row, relevance descending
            (the order ranx's kernels take as the ideal ranking).
    """

    qids: tuple[str, ...]
    vocabulary: Mapping[str, int]
    judged_rows: tuple[int, ...]
    judgements: tuple[np.ndarray, ...]


def prepare_qrels(qrels: Qrels) -> PreparedQrels:
    """Encode ``qrels`` for :func:`rank_run`. Raises ValueError when they are empty."""
    qids = tuple(sorted(qrels))
    if not qids:
        raise ValueError("qrels are empty: nothing to evaluate")
    judged_rows = tuple(
        row for row, qid in enumerate(qids) if any(r >= RELEVANCE_LEVEL for r in qrels[qid].values())
    )
    vocabulary: dict[str, int] = {}
    judgements = []
    for row in judged_rows:
        judged = qrels[qids[row]]
        array = np.empty((len(judged), 2), dtype=np.float64)
        array[:, 0] = [vocabulary.setdefault(d, len(vocabulary)) for d in judged]
        array[:, 1] = list(judged.values())
        judgements.append(array[np.argsort(-array[:, 1], kind="stable")])
    return PreparedQrels(qids=qids, vocabulary=vocabulary, judged_rows=judged_rows, judgements=tuple(judgements))


@dataclass(frozen=True)
class RankedRun:
    """A run in trec_eval order over the qrels queries, plus the kernel inputs of the queries ranx scores.

    Attributes:
        docids: ``(n_hits,)`` object array of str: every retrieved docid of the qrels queries, grouped by
            query in ``qids`` order, each query's hits in trec_eval order (score desc, docid desc).
        starts: ``(len(qids) + 1,)`` int64 offsets: query ``i``'s hits are ``docids[starts[i]:starts[i + 1]]``.
        rows: ``(m,)`` int64 indexes into ``qids`` of the queries with hits and a relevant judgement.
        queries: the :class:`RankedQuery` of each of ``rows`` (the others are 0 in every measure).
    """

    docids: np.ndarray
    starts: np.ndarray
    rows: np.ndarray
    queries: tuple[RankedQuery, ...]


def rank_run(prepared: PreparedQrels, run: Run, trec_eval_version: int = DEFAULT_TREC_EVAL_VERSION) -> RankedRun:
    """Sort every query's hits as trec_eval does and encode them for ranx's kernels, vectorised.

    The order is :func:`clir_eval.retrieval.runs.sort_hits`'s (score descending, docid descending by code
    point, like ``strcmp`` over UTF-8), computed for all queries at once: a per-query Python sort made
    evaluation several times slower than trec_eval. Scores are replaced by ``n - rank`` so the kernels,
    which assume rows sorted by score, see exactly the trec_eval order with no ties left. With
    ``trec_eval_version`` 9 scores are compared after rounding to float32, as trec_eval 9.x stores them.

    Raises:
        TypeError: a qid or docid that is not ``str``. ValueError: a NaN score.
    """
    qids = prepared.qids
    _check_str(run, "qid")
    position = {qid: row for row, qid in enumerate(qids)}
    hit_rows: list[int] = []
    counts: list[int] = []
    doc_list: list[str] = []
    score_list: list[float] = []
    for qid, hits in run.items():
        row = position.get(qid)
        if row is None or not hits:
            continue
        hit_rows.append(row)
        counts.append(len(hits))
        doc_list.extend(hits.keys())
        score_list.extend(hits.values())
    _check_str(doc_list, "docid")
    query_of_hit = np.repeat(np.asarray(hit_rows, dtype=np.int64), counts)
    scores = np.asarray(score_list, dtype=np.float64)
    if np.isnan(scores).any():
        raise ValueError(f"query {qids[int(query_of_hit[np.isnan(scores).argmax()])]!r} has a NaN score")
    if trec_eval_version == 9:
        with np.errstate(over="ignore"):  # beyond float32's range is inf, as C's double-to-float conversion
            scores = scores.astype(np.float32)

    # Tie-break key: each docid's rank among the run's distinct docids (far fewer than the hits), so that
    # only those are sorted as strings.
    distinct = sorted(set(doc_list))
    rank_of = {docid: rank for rank, docid in enumerate(distinct)}
    doc_rank = np.fromiter(map(rank_of.__getitem__, doc_list), dtype=np.int64, count=len(doc_list))
    order = _trec_order(query_of_hit, scores, doc_rank, len(distinct))
    query_of_hit, doc_rank = query_of_hit[order], doc_rank[order]
    starts = np.zeros(len(qids) + 1, dtype=np.int64)
    np.cumsum(np.bincount(query_of_hit, minlength=len(qids)), out=starts[1:])

    judged_code = np.array([prepared.vocabulary.get(d, -1) for d in distinct], dtype=np.float64)
    ranking = np.empty((len(order), 2), dtype=np.float64)
    ranking[:, 0] = judged_code[doc_rank] if len(distinct) else 0.0
    ranking[:, 1] = starts[query_of_hit + 1] - np.arange(len(order))  # n - rank within the query
    docids = np.asarray(distinct, dtype=object)[doc_rank] if len(distinct) else np.zeros(0, dtype=object)

    rows: list[int] = []
    queries: list[RankedQuery] = []
    for row, judgements in zip(prepared.judged_rows, prepared.judgements):
        if starts[row + 1] > starts[row]:
            rows.append(row)
            queries.append(RankedQuery(qrels=judgements, ranking=ranking[starts[row]:starts[row + 1]]))
    return RankedRun(docids=docids, starts=starts, rows=np.asarray(rows, dtype=np.int64), queries=tuple(queries))


def evaluate_runs(
    qrels: Qrels,
    runs: Mapping[str, Run],
    metrics: Sequence[str | MetricSpec],
    judged_queries_only: bool = False,
    trec_eval_version: int = DEFAULT_TREC_EVAL_VERSION,
) -> EvaluationResult:
    """Evaluate several named runs on the same qrels (see the module docstring for which queries count).

    Args:
        qrels: ``{qid: {docid: relevance}}``.
        runs: ``{run name: {qid: {docid: score}}}``; ties are broken as trec_eval does.
        metrics: ranx-style names (``"map"``, ``"ndcg@10"``, ...) or parsed specs.
        judged_queries_only: average over queries in both run and qrels (plain trec_eval) instead of
            over every qrels query (``trec_eval -c``, the default).
        trec_eval_version: 9 (default) compares scores at float32 precision as trec_eval 9.x and pytrec_eval
            do; 10 compares doubles as trec_eval 10.0 does.
    """
    check_trec_eval_version(trec_eval_version)
    specs = _specs(metrics)
    if not runs:
        raise ValueError("no run to evaluate")
    prepared = prepare_qrels(qrels)
    qids = prepared.qids
    per_query: dict[str, dict[str, np.ndarray]] = {}
    means: dict[str, dict[str, float]] = {}
    counts: dict[str, int] = {}
    for name, run in runs.items():
        scores = _evaluate(prepared, qrels, run, specs, judged_queries_only, trec_eval_version)
        per_query[name] = scores
        counted = ~np.isnan(next(iter(scores.values())))
        counts[name] = int(counted.sum())
        if counts[name] == 0:
            raise ValueError(f"run {name!r} has no query in common with the qrels (trec_eval would stop here too)")
        means[name] = {metric: float(np.mean(values[counted])) for metric, values in scores.items()}
    return EvaluationResult(
        qids=qids,
        metrics=tuple(spec.name for spec in specs),
        per_query=per_query,
        means=means,
        num_queries=counts,
        judged_queries_only=judged_queries_only,
        trec_eval_version=trec_eval_version,
    )


def _check_str(ids: Iterable[object], kind: str) -> None:
    """Raise TypeError unless every id is a ``str`` (one ``type`` per id, at C speed)."""
    ids = list(ids)
    if not all(issubclass(t, str) for t in set(map(type, ids))):
        bad = next(i for i in ids if not isinstance(i, str))
        raise TypeError(f"{kind} {bad!r} is {type(bad).__name__}, ids must be str")


def _trec_order(query: np.ndarray, scores: np.ndarray, doc_rank: np.ndarray, n_docs: int) -> np.ndarray:
    """Permutation sorting hits by query ascending, score descending, docid rank descending.

    One int64 argsort over a packed key ``query, score rank, docid rank`` (3x faster than ``np.lexsort``
    over the three columns); ``np.lexsort`` when the packed key would not fit in 63 bits.
    """
    if scores.size == 0:
        return np.zeros(0, dtype=np.int64)
    distinct_scores, score_rank = np.unique(scores, return_inverse=True)  # -0.0 == 0.0: one value, as in C
    n_scores = len(distinct_scores)
    n_queries = int(query.max()) + 1
    if n_queries * n_scores * n_docs < 2**62:
        key = (query * n_scores + (n_scores - 1 - score_rank)) * n_docs + (n_docs - 1 - doc_rank)
        return np.argsort(key)  # keys are unique: a docid appears once per query
    return np.lexsort((-doc_rank, -scores, query))


def _specs(metrics: Sequence[str | MetricSpec]) -> list[MetricSpec]:
    if isinstance(metrics, str):
        raise TypeError("metrics must be a sequence of names, not a single string")
    names = [m.name if isinstance(m, MetricSpec) else m for m in metrics]
    return parse_metrics(names)
