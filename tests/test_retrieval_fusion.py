"""Fusion (hybrid system): RRF and weighted sum agree with ranx on tie-free runs, and rank ties as trec_eval."""

import random

import pytest

from clir_eval.retrieval.fusion import FusionConfig, fuse, rrf, weighted_sum


def _random_run(seed: int, queries: int = 5, docs: int = 30, depth: int = 12) -> dict:
    rng = random.Random(seed)
    run = {}
    for q in range(queries):
        ids = rng.sample([f"d{i:02d}" for i in range(docs)], depth)
        # Distinct scores: no ties, so ranx's argsort order is the trec_eval order.
        scores = rng.sample(range(1, 10_000), depth)
        run[f"q{q}"] = [(d, s / 100.0) for d, s in zip(ids, scores)]
    return run


def _as_ranx(run: dict):
    from ranx import Run

    return Run({qid: dict(hits) for qid, hits in run.items()})


@pytest.mark.slow  # ranx compiles its numba kernels (about a minute on a cold cache)
@pytest.mark.parametrize("method", ["rrf", "wsum"])
def test_fusion_matches_ranx_without_ties(method):
    from ranx import fuse as ranx_fuse

    a, b = _random_run(1), _random_run(2)
    if method == "rrf":
        ours = rrf([a, b], k=60)
        theirs = ranx_fuse([_as_ranx(a), _as_ranx(b)], norm=None, method="rrf", params={"k": 60}).to_dict()
    else:
        ours = weighted_sum([a, b], [0.3, 0.7])
        theirs = ranx_fuse([_as_ranx(a), _as_ranx(b)], norm="min-max", method="wsum",
                           params={"weights": [0.3, 0.7]}).to_dict()
    assert set(ours) == set(theirs)
    for qid, hits in ours.items():
        assert dict(hits) == pytest.approx(theirs[qid], abs=1e-12)
        scores = [s for _, s in hits]
        assert scores == sorted(scores, reverse=True)


def test_rrf_ranks_ties_in_trec_eval_order():
    # Two docs tie in run a: trec_eval ranks docid-descending ("b" before "a"), so "b" gets rank 1.
    fused = rrf([{"q": [("a", 1.0), ("b", 1.0)]}], k=0)
    assert fused["q"] == [("b", 1.0), ("a", 0.5)]


def test_weighted_sum_absent_document_adds_zero_and_queries_union():
    a = {"q1": [("x", 3.0), ("y", 1.0)]}
    b = {"q1": [("y", 10.0), ("z", 0.0)], "q2": [("w", 2.0)]}
    fused = weighted_sum([a, b], [1.0, 1.0])
    assert dict(fused["q1"]) == {"x": 1.0, "y": 1.0, "z": 0.0}
    assert set(fused) == {"q1", "q2"}


def test_fuse_truncates_components_to_depth():
    a = {"q": [("d1", 3.0), ("d2", 2.0), ("d3", 1.0)]}
    b = {"q": [("d4", 3.0), ("d3", 2.0)]}
    fused = fuse([a, b], FusionConfig(method="rrf", depth=1, rrf_k=0))
    assert dict(fused["q"]) == {"d1": 1.0, "d4": 1.0}


@pytest.mark.parametrize("kwargs", [{"method": "combsum"}, {"rrf_k": -1}, {"weights": (1.0,)}, {"depth": 0},
                                    {"weights": (float("nan"), 1.0)}])
def test_fusion_config_rejects_bad_values(kwargs):
    with pytest.raises(ValueError):
        FusionConfig(**kwargs)
