"""trec_eval parity: every metric, per query and averaged, against pytrec_eval (trec_eval's own C code)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import pytrec_eval

from clir_eval.collections.records import Qrel
from clir_eval.evaluation.evaluate import evaluate_run, evaluate_runs, qrels_from_records
from clir_eval.evaluation.metrics import parse_metric, valid_metric_names
from clir_eval.retrieval.runs import sort_hits

METRICS = [
    "map", "map@10", "ndcg", "ndcg@5", "ndcg@10", "precision@1", "precision@5", "precision@20", "precision",
    "recall@5", "recall@100", "recall", "mrr", "r-precision", "hit_rate@3", "bpref",
]
TOLERANCE = 1e-12


def random_collection(seed: int, n_queries: int = 120, n_docs: int = 400, depth: int = 60):
    """Graded qrels with non-relevant and negative (pool-but-unjudged) labels, queries without any relevant
    document, queries absent from the run, run queries absent from the qrels, heavy score ties and
    unjudged retrieved documents."""
    rng = np.random.default_rng(seed)
    qrels: dict[str, dict[str, int]] = {}
    run: dict[str, dict[str, float]] = {}
    for q in range(n_queries):
        qid = str(q + 1)  # digit-only ids: must stay strings ("10" < "9")
        judged = rng.choice(n_docs, size=int(rng.integers(1, 40)), replace=False)
        labels = [-1, 0, 0, 0, 1, 1, 2, 3] if q % 7 else [0, -1]  # every 7th query: nothing relevant
        qrels[qid] = {f"doc{d}": int(rng.choice(labels)) for d in judged}
        if q % 11 == 5:
            continue  # judged but not answered by the run
        size = int(rng.integers(1, depth))
        retrieved = rng.choice(n_docs, size=size, replace=False)
        if q % 3 == 0:
            scores = rng.integers(0, 4, size=size).astype(float)  # many ties
        else:
            scores = np.round(rng.normal(size=size).astype(np.float32), 2).astype(float)
        run[qid] = {f"doc{d}": float(s) for d, s in zip(retrieved, scores)}
    run["999"] = {"doc1": 1.0, "doc2": 2.0}  # not judged: ignored by trec_eval
    return qrels, run


def realistic_collection(seed: int):
    """BM25-like float32 scores over 100 hits per query, few relevant documents, XQuAD/NTREX-like ids."""
    rng = np.random.default_rng(seed)
    qrels, run = {}, {}
    for q in range(60):
        qid = f"xquad-{q:04d}"
        relevant = rng.choice(5000, size=int(rng.integers(1, 4)), replace=False)
        qrels[qid] = {f"en-{d}": 1 for d in relevant}
        base = np.sort(rng.gamma(2.0, 3.0, size=100).astype(np.float32))[::-1]
        docs = rng.choice(5000, size=100, replace=False)
        if rng.random() < 0.5:
            docs[int(rng.integers(0, 100))] = relevant[0]
        run[qid] = {f"en-{d}": float(s) for d, s in zip(docs, base)}
    return qrels, run


def trec_eval_scores(qrels, run, metrics):
    measures = {parse_metric(m).trec_eval for m in metrics if not m.startswith("mrr@")}
    return pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(run)


@pytest.mark.parametrize("make, seed", [(random_collection, 0), (random_collection, 1), (random_collection, 2),
                                        (realistic_collection, 3)])
def test_every_metric_matches_trec_eval_per_query_and_on_average(make, seed):
    qrels, run = make(seed)
    reference = trec_eval_scores(qrels, run, METRICS)  # per query, for queries in run and qrels
    complete = evaluate_runs(qrels, {"r": run}, METRICS)
    judged = evaluate_runs(qrels, {"r": run}, METRICS, judged_queries_only=True)
    assert complete.qids == tuple(sorted(qrels))
    answered = [q for q in complete.qids if q in run]
    assert judged.num_queries["r"] == len(answered) == len(reference)
    assert complete.num_queries["r"] == len(qrels)
    for metric in METRICS:
        measure = parse_metric(metric).trec_eval
        expected = np.array([reference[q][measure] if q in reference else 0.0 for q in complete.qids])
        np.testing.assert_allclose(complete.per_query["r"][metric], expected, rtol=0, atol=TOLERANCE, err_msg=metric)
        # trec_eval -c: the sum over answered queries divided by every qrels query
        assert complete.means["r"][metric] == pytest.approx(expected.sum() / len(qrels), abs=TOLERANCE), metric
        # plain trec_eval: the mean over the answered queries; unanswered ones are NaN per query
        mean_answered = np.mean([reference[q][measure] for q in answered])
        assert judged.means["r"][metric] == pytest.approx(mean_answered, abs=TOLERANCE), metric
        missing = np.array([q not in run for q in complete.qids])
        assert np.isnan(judged.per_query["r"][metric][missing]).all()


def test_mrr_at_k_equals_trec_eval_recip_rank_on_the_truncated_ranking():
    qrels, run = random_collection(5)
    for k in (1, 3, 10):
        truncated = {q: dict(sort_hits(hits)[:k]) for q, hits in run.items()}
        reference = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(truncated)
        ours = evaluate_run(qrels, run, [f"mrr@{k}"])[f"mrr@{k}"]
        expected = [reference[q]["recip_rank"] if q in reference else 0.0 for q in sorted(qrels)]
        np.testing.assert_allclose(ours, expected, rtol=0, atol=TOLERANCE)


def test_ties_are_broken_by_docid_descending_not_left_to_argsort():
    # trec_eval ranks "b" before "a" at equal score, so the relevant "a" is at rank 2.
    qrels = {"q": {"a": 1}}
    run = {"q": {"a": 1.0, "b": 1.0}}
    scores = evaluate_run(qrels, run, ["mrr", "precision@1", "ndcg"])
    assert scores["mrr"][0] == 0.5
    assert scores["precision@1"][0] == 0.0
    assert scores["ndcg"][0] == pytest.approx(1 / np.log2(3))


def test_queries_without_relevant_documents_count_as_zero_in_both_modes():
    qrels = {"q1": {"a": 1}, "q2": {"b": 0}}
    run = {"q1": {"a": 1.0}, "q2": {"b": 1.0}}
    for judged_only in (False, True):
        result = evaluate_runs(qrels, {"r": run}, ["map", "ndcg@10", "mrr"], judged_queries_only=judged_only)
        assert result.num_queries["r"] == 2
        assert result.means["r"] == {"map": 0.5, "ndcg@10": 0.5, "mrr": 0.5}


def test_missing_queries_count_as_zero_unless_judged_queries_only():
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}, "q3": {"c": 1}, "q4": {"d": 1}}
    run = {"q1": {"a": 1.0}, "q2": {"x": 1.0, "b": 0.5}}
    assert evaluate_runs(qrels, {"r": run}, ["mrr"]).means["r"]["mrr"] == pytest.approx((1 + 0.5) / 4)
    assert evaluate_runs(qrels, {"r": run}, ["mrr"], judged_queries_only=True).means["r"]["mrr"] == pytest.approx(0.75)


def test_unjudged_and_negative_labels_are_not_relevant_and_graded_gains_are_the_labels():
    qrels = {"q": {"a": 2, "b": 1, "c": -1, "d": 0}}
    run = {"q": {"c": 5.0, "x": 4.0, "b": 3.0, "a": 2.0, "d": 1.0}}
    scores = evaluate_run(qrels, run, ["ndcg", "map", "r-precision"])
    dcg = 1 / np.log2(4) + 2 / np.log2(5)
    ideal = 2 / np.log2(2) + 1 / np.log2(3)
    assert scores["ndcg"][0] == pytest.approx(dcg / ideal, abs=1e-15)
    assert scores["map"][0] == pytest.approx((1 / 3 + 2 / 4) / 2, abs=1e-15)
    assert scores["r-precision"][0] == 0.0


def test_several_runs_share_the_query_axis():
    qrels, run = random_collection(7, n_queries=30)
    other = {q: {d: -s for d, s in hits.items()} for q, hits in run.items()}
    result = evaluate_runs(qrels, {"a": run, "b": other}, ["map", "ndcg@10"])
    assert result.runs == ("a", "b")
    assert result.metrics == ("map", "ndcg@10")
    for name in result.runs:
        assert all(values.shape == (len(result.qids),) for values in result.per_query[name].values())
    frame = result.to_dataframe()
    assert frame.loc["b", "map"] == result.means["b"]["map"]
    long = result.per_query_dataframe()
    assert len(long) == 2 * len(result.qids)


def test_no_common_query_warns_in_complete_mode_and_fails_in_judged_mode(caplog):
    qrels = {"1": {"a": 1}}
    run = {"01": {"a": 1.0}}  # an id cast to int and back would produce exactly this mismatch
    with caplog.at_level(logging.WARNING, logger="clir_eval.evaluation.evaluate"):
        result = evaluate_runs(qrels, {"r": run}, ["map"])
    assert result.means["r"]["map"] == 0.0
    assert "none of the 1 judged queries" in caplog.text
    with pytest.raises(ValueError, match="no query in common"):
        evaluate_runs(qrels, {"r": run}, ["map"], judged_queries_only=True)


def test_qrels_from_records_rejects_duplicate_judgements():
    assert qrels_from_records([Qrel("q", "a", 1), Qrel("q", "b", 0)]) == {"q": {"a": 1, "b": 0}}
    with pytest.raises(ValueError, match="twice"):
        qrels_from_records([Qrel("q", "a", 1), Qrel("q", "a", 0)])


@pytest.mark.parametrize(
    "name, canonical, trec",
    [("map", "map", "map"), ("ndcg@10", "ndcg@10", "ndcg_cut_10"), ("precision@5", "precision@5", "P_5"),
     ("recall@100", "recall@100", "recall_100"), ("mrr", "mrr", "recip_rank"), ("r-precision", "r-precision", "Rprec"),
     ("hit_rate@10", "hit_rate@10", "success_10"), ("bpref", "bpref", "bpref"), (" ndcg@010 ", "ndcg@10", "ndcg_cut_10")],
)
def test_metric_names_parse_in_one_place(name, canonical, trec):
    spec = parse_metric(name)
    assert (spec.name, spec.trec_eval) == (canonical, trec)


@pytest.mark.parametrize("name", ["ndcg_cut_10", "P@10", "foo", "precision@0", "r-precision@5", "hit_rate", "bpref@3", ""])
def test_unknown_or_malformed_metric_names_list_the_valid_ones(name):
    with pytest.raises(ValueError) as info:
        parse_metric(name)
    for valid in valid_metric_names():
        assert valid in str(info.value)


def test_metrics_must_be_a_list_and_repeats_collapse():
    with pytest.raises(TypeError):
        evaluate_run({"q": {"a": 1}}, {"q": {"a": 1.0}}, "map")
    result = evaluate_runs({"q": {"a": 1}}, {"r": {"q": {"a": 1.0}}}, ["map", "map", "ndcg@10"])
    assert result.metrics == ("map", "ndcg@10")


REPO = __import__("pathlib").Path(__file__).resolve().parents[1]


def runs_over_real_qrels(qrels_path, seed: int, depth: int = 100):
    """Runs over a real collection's qrels and docids: 100 hits per query drawn from the judged pool
    (relevant one placed at a random rank or left out), float32 scores rounded to force ties, one query
    in ten left out of the run. Returns the qrels too."""
    from clir_eval.collections.readers import read_qrels

    qrels = qrels_from_records(read_qrels(qrels_path))
    pool = sorted({d for judgements in qrels.values() for d in judgements})
    rng = np.random.default_rng(seed)
    run = {}
    for i, qid in enumerate(sorted(qrels)):
        if i % 10 == 3:
            continue
        docs = list(rng.choice(pool, size=min(depth, len(pool)), replace=False))
        relevant = list(qrels[qid])
        if rng.random() < 0.7 and relevant[0] not in docs:
            docs[int(rng.integers(0, len(docs)))] = relevant[0]
        scores = np.round(np.sort(rng.gamma(2.0, 3.0, size=len(docs)).astype(np.float32))[::-1], 1)
        run[qid] = {d: float(s) for d, s in zip(docs, scores)}
    return qrels, run


@pytest.mark.parametrize("path", ["qrels/xquad-r/test.qrels", "qrels/ntrex/test.qrels"])
def test_real_qrels_parity_with_trec_eval(path):
    qrels, run = runs_over_real_qrels(REPO / path, seed=11)
    metrics = ["map", "ndcg", "ndcg@10", "precision@10", "recall@100", "mrr", "r-precision", "bpref"]
    reference = trec_eval_scores(qrels, run, metrics)
    complete = evaluate_runs(qrels, {"r": run}, metrics)
    judged = evaluate_runs(qrels, {"r": run}, metrics, judged_queries_only=True)
    for metric in metrics:
        measure = parse_metric(metric).trec_eval
        expected = np.array([reference[q][measure] if q in reference else 0.0 for q in complete.qids])
        np.testing.assert_allclose(complete.per_query["r"][metric], expected, rtol=0, atol=TOLERANCE, err_msg=metric)
        assert complete.means["r"][metric] == pytest.approx(expected.sum() / len(qrels), abs=TOLERANCE)
        assert judged.means["r"][metric] == pytest.approx(
            np.mean([v[measure] for v in reference.values()]), abs=TOLERANCE)


def test_ranx_own_evaluate_agrees_once_ties_are_broken_the_trec_eval_way():
    """Guards our use of ranx's kernels: on a run whose scores carry no ties (rewritten from the trec_eval
    order), ranx's public ``evaluate`` over dict-built Qrels/Run gives our numbers; on the raw run with
    ties it may not, which is why we never hand ranx unsorted ties."""
    from ranx import Qrels, Run, evaluate

    qrels, run = random_collection(4, n_queries=40)
    untied = {q: {d: float(len(hits) - i) for i, (d, _) in enumerate(sort_hits(hits))} for q, hits in run.items()}
    relevant = {q: j for q, j in qrels.items() if any(r >= 1 for r in j.values()) and q in run}
    metrics = ["map", "ndcg@10", "precision@5", "recall@20", "mrr", "r-precision"]
    ours = evaluate_runs(relevant, {"r": {q: run[q] for q in relevant}}, metrics).means["r"]
    ranx_scores = evaluate(Qrels({q: {d: max(r, 0) for d, r in j.items()} for q, j in relevant.items()}),
                           Run({q: untied[q] for q in relevant}), metrics)
    for metric in metrics:
        assert ranx_scores[metric] == pytest.approx(ours[metric], abs=1e-12), metric


def test_ids_must_be_strings_and_scores_not_nan():
    qrels = {"1": {"a": 1}}
    with pytest.raises(TypeError, match="qid 1 is int"):
        evaluate_run(qrels, {1: {"a": 1.0}}, ["map"])
    with pytest.raises(TypeError, match="docid 7 is int"):
        evaluate_run(qrels, {"1": {7: 1.0}}, ["map"])
    with pytest.raises(ValueError, match="NaN"):
        evaluate_run(qrels, {"1": {"a": float("nan")}}, ["map"])
