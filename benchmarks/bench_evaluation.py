"""Evaluation speed: ``clir_eval.evaluation.evaluate_runs`` vs pytrec_eval (trec_eval's C code) on the same runs.

Builds one run per XQuAD-R language (11 x 1,190 queries x 100 hits over the real XQuAD-R qrels and English
corpus ids; synthetic float32 scores rounded so that ties occur), then times, on the same in-memory runs:

* ours: ``evaluate_runs(qrels, runs, metrics)`` (trec_eval order, ranx kernels, trec_eval -c means);
* pytrec_eval: ``RelevanceEvaluator(qrels, measures).evaluate(run)`` per run plus the -c mean;
* ranx: ``ranx.evaluate(Qrels, Run, metrics)`` per run (Run built from dicts; ties left to ranx, so its
  numbers may differ: shown for speed only).

It first checks that our means equal pytrec_eval's to 1e-12, so the faster side is not faster by computing
something else. Timings are the best of ``--repeats`` after one warm-up call (numba compiles on first use;
the warm-up time is printed too).

Usage::

    python benchmarks/bench_evaluation.py [--repeats 3] [--depth 100]

Prints the wall times and the ratio pytrec_eval / ours (> 1: ours is faster).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
METRICS = ["map", "ndcg", "ndcg@10", "precision@10", "recall@100", "mrr", "r-precision"]
LANGS = ["ar", "de", "el", "en", "es", "hi", "ru", "th", "tr", "vi", "zh"]


def make_runs(depth: int, seed: int = 0):
    from clir_eval.collections.readers import read_qrels
    from clir_eval.collections.registry import load_collection
    from clir_eval.evaluation.evaluate import qrels_from_records

    qrels = qrels_from_records(read_qrels(ROOT / "qrels" / "xquad-r" / "test.qrels"))
    pool = np.array(sorted(doc.docid for doc in load_collection("xquad-r", validate=False).documents()))
    rng = np.random.default_rng(seed)
    runs = {}
    for index, lang in enumerate(LANGS):
        hit_rate = 0.9 - 0.05 * index
        run = {}
        for qid, judgements in qrels.items():
            docs = list(rng.choice(pool, size=depth, replace=False))
            relevant = next(iter(judgements))
            if rng.random() < hit_rate and relevant not in docs:
                docs[min(int(rng.exponential(5)), depth - 1)] = relevant
            scores = np.round(np.sort(rng.gamma(2.0, 3.0, size=depth).astype(np.float32))[::-1], 2)
            run[qid] = {str(d): float(s) for d, s in zip(docs, scores)}
        runs[lang] = run
    return qrels, runs


def ours(qrels, runs):
    from clir_eval.evaluation.evaluate import evaluate_runs

    return evaluate_runs(qrels, runs, METRICS).means


def pytrec(qrels, runs):
    import pytrec_eval

    from clir_eval.evaluation.metrics import parse_metric

    measures = {parse_metric(m).trec_eval: m for m in METRICS}
    means = {}
    for name, run in runs.items():
        scores = pytrec_eval.RelevanceEvaluator(qrels, set(measures)).evaluate(run)
        means[name] = {m: sum(v[t] for v in scores.values()) / len(qrels) for t, m in measures.items()}
    return means


def ranx_native(qrels, runs):
    from ranx import Qrels, Run, evaluate

    ranx_qrels = Qrels({q: dict(j) for q, j in qrels.items()})
    return {name: evaluate(ranx_qrels, Run({q: dict(h) for q, h in run.items()}), METRICS) for name, run in runs.items()}


def timed(function, qrels, runs, repeats: int) -> tuple[float, float, object]:
    start = time.perf_counter()
    value = function(qrels, runs)
    first = time.perf_counter() - start
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function(qrels, runs)
        best = min(best, time.perf_counter() - start)
    return first, best, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--depth", type=int, default=100)
    args = parser.parse_args()

    qrels, runs = make_runs(args.depth)
    hits = sum(len(h) for run in runs.values() for h in run.values())
    print(f"{len(runs)} runs x {len(qrels)} queries, {hits:,} hits; metrics: {', '.join(METRICS)}")
    results = {}
    for label, function in (("ours", ours), ("pytrec_eval", pytrec), ("ranx (dict Run)", ranx_native)):
        results[label] = timed(function, qrels, runs, args.repeats)
        first, best, _ = results[label]
        print(f"{label:>16}: first call {first:7.3f} s, best of {args.repeats} {best:7.3f} s")
    mine, reference = results["ours"][2], results["pytrec_eval"][2]
    worst = max(abs(mine[r][m] - reference[r][m]) for r in runs for m in METRICS)
    print(f"max |ours - pytrec_eval| over {len(runs) * len(METRICS)} means: {worst:.2e}")
    if worst > 1e-12:
        raise SystemExit("our means differ from trec_eval's")
    ratio = results["pytrec_eval"][1] / results["ours"][1]
    print(f"ratio pytrec_eval / ours (warm): {ratio:.2f}")


if __name__ == "__main__":
    main()
