"""Significance tests, corrections, bootstrap intervals and the comparison table, checked against scipy/ranx."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats

from clir_eval.evaluation.comparison import CompareConfig, compare_systems
from clir_eval.evaluation.evaluate import evaluate_runs
from clir_eval.evaluation.leaderboard import build_leaderboard
from clir_eval.evaluation.significance import (
    bootstrap_ci,
    bootstrap_cis,
    cohens_d_paired,
    correct_p_values,
    get_test,
    paired_t_test,
    randomization_test,
    win_tie_loss,
)


def scores(seed: int, n: int = 50, shift: float = 0.03):
    rng = np.random.default_rng(seed)
    control = rng.uniform(0, 1, size=n)
    treatment = np.clip(control + rng.normal(shift, 0.15, size=n), 0, 1)
    return control, treatment


def test_t_test_is_scipy_ttest_rel_and_ranx_student():
    from ranx.statistical_tests import paired_student_t_test

    for seed in range(3):
        control, treatment = scores(seed)
        ours = paired_t_test(control, treatment)
        reference = stats.ttest_rel(treatment, control)
        assert ours.p_value == pytest.approx(reference.pvalue, rel=1e-12)
        assert ours.statistic == pytest.approx(reference.statistic, rel=1e-12)
        ranx_p, _ = paired_student_t_test(control, treatment)
        assert ours.p_value == pytest.approx(ranx_p, rel=1e-12)


def test_t_test_without_any_difference_is_p_one():
    values = np.array([0.1, 0.5, 0.3])
    assert paired_t_test(values, values.copy()).p_value == 1.0


def exact_sign_flip_p(control, treatment):
    diff = treatment - control
    observed = abs(diff.mean())
    flips = np.array(list(itertools.product((-1, 1), repeat=diff.size)))
    return float(np.mean(np.abs(flips @ diff / diff.size) >= observed - 1e-12))


def test_randomization_test_approaches_the_exact_permutation_p_value():
    control, treatment = scores(3, n=10, shift=0.08)
    exact = exact_sign_flip_p(control, treatment)
    scipy_exact = stats.permutation_test(
        (treatment, control), lambda x, y: np.mean(x - y), permutation_type="samples", n_resamples=np.inf
    ).pvalue
    assert exact == pytest.approx(scipy_exact, abs=1e-12)
    result = randomization_test(control, treatment, seed=0, n_resamples=40_000)
    # Monte-Carlo standard error at 40k resamples is below 0.0025
    assert result.p_value == pytest.approx(exact, abs=0.01)
    assert result.statistic == pytest.approx(np.mean(treatment - control))


def test_randomization_test_honours_its_seed():
    control, treatment = scores(4, n=40, shift=0.04)
    first = randomization_test(control, treatment, seed=7, n_resamples=2_000)
    again = randomization_test(control, treatment, seed=7, n_resamples=2_000)
    assert first == again
    others = {randomization_test(control, treatment, seed=s, n_resamples=2_000).p_value for s in range(8, 13)}
    assert len(others | {first.p_value}) > 1  # ranx #70: its seed had no effect at all


def test_randomization_p_value_is_never_zero():
    control = np.zeros(30)
    treatment = np.ones(30)
    result = randomization_test(control, treatment, seed=1, n_resamples=999)
    assert result.p_value == pytest.approx(1 / 1000)


def test_tests_are_looked_up_by_name():
    assert get_test("t") is paired_t_test
    assert get_test("randomization") is randomization_test
    with pytest.raises(ValueError, match="t, randomization"):
        get_test("wilcoxon")


def test_holm_and_bonferroni_by_hand():
    p = [0.01, 0.04, 0.03, 0.005]
    # Holm: sorted 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> running max 0.02, 0.03, 0.06, 0.06
    np.testing.assert_allclose(correct_p_values(p, "holm"), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(correct_p_values(p, "bonferroni"), [0.04, 0.16, 0.12, 0.02])
    np.testing.assert_allclose(correct_p_values(p, "none"), p)
    np.testing.assert_allclose(correct_p_values([0.5, np.nan, 0.01], "holm"), [0.5, np.nan, 0.02])
    with pytest.raises(ValueError, match="holm, bonferroni, none"):
        correct_p_values(p, "fdr")


def test_holm_lies_between_raw_and_bonferroni_and_keeps_the_order():
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 0.2, size=25)
    holm = correct_p_values(p, "holm")
    assert (holm >= p - 1e-15).all() and (holm <= correct_p_values(p, "bonferroni") + 1e-15).all()
    order = np.argsort(p)
    assert (np.diff(holm[order]) >= 0).all()


def test_bootstrap_ci_is_seeded_and_matches_scipy_percentile_bootstrap():
    control, treatment = scores(5, n=200)
    diff = treatment - control
    ci = bootstrap_ci(diff, seed=3, n_resamples=5_000)
    assert ci == bootstrap_ci(diff, seed=3, n_resamples=5_000)
    assert ci.low < diff.mean() < ci.high
    reference = stats.bootstrap((diff,), np.mean, method="percentile", n_resamples=5_000, random_state=1)
    width = reference.confidence_interval.high - reference.confidence_interval.low
    assert ci.low == pytest.approx(reference.confidence_interval.low, abs=0.1 * width)
    assert ci.high == pytest.approx(reference.confidence_interval.high, abs=0.1 * width)


def test_effect_size_is_t_over_sqrt_n_and_win_tie_loss_counts():
    control, treatment = scores(6, n=30)
    t = stats.ttest_rel(treatment, control).statistic
    assert cohens_d_paired(control, treatment) == pytest.approx(t / np.sqrt(30), rel=1e-12)
    assert np.isnan(cohens_d_paired(np.zeros(3), np.ones(3)))
    assert tuple(win_tie_loss(np.array([0.1, 0.5, 0.3, 0.2]), np.array([0.2, 0.5, 0.1, 0.2]))) == (1, 2, 1)


def test_paired_inputs_are_checked():
    with pytest.raises(ValueError, match="equal length"):
        paired_t_test(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="finite"):
        randomization_test(np.array([0.1, np.nan]), np.array([0.2, 0.3]), seed=0)


def three_runs(seed: int = 0, n: int = 60):
    rng = np.random.default_rng(seed)
    qrels = {f"q{i}": {f"d{i}": 1} for i in range(n)}
    runs = {}
    for name, quality, worst in (("bm25", 0.3, 10), ("student", 0.8, 3), ("noise", 0.3, 10)):
        run = {}
        for i in range(n):
            docs = [f"d{j}" for j in rng.choice(n, size=10, replace=False) if j != i]
            rank = int(rng.integers(0, worst)) if rng.random() < quality else None
            if rank is not None:
                docs.insert(rank, f"d{i}")
            run[f"q{i}"] = {d: 1.0 / (r + 1) for r, d in enumerate(docs[:10])}
        runs[name] = run
    return qrels, runs


def test_compare_corrects_over_every_pair_and_metric_of_the_table():
    qrels, runs = three_runs()
    result = evaluate_runs(qrels, runs, ["mrr", "ndcg@10", "recall@10"])
    config = CompareConfig(baselines=("bm25",), test="t", correction="holm")
    comparison = compare_systems(result, config)
    assert len(comparison.pairs) == 2 * 3  # 2 systems x 3 metrics, one family
    raw = [p.p_value for p in comparison.pairs]
    np.testing.assert_allclose([p.p_adjusted for p in comparison.pairs], correct_p_values(raw, "holm"))
    pair = comparison.get("bm25", "student", "mrr")
    control, treatment = result.per_query["bm25"]["mrr"], result.per_query["student"]["mrr"]
    assert pair.p_value == pytest.approx(stats.ttest_rel(treatment, control).pvalue)
    assert pair.mean_difference == pytest.approx(treatment.mean() - control.mean())
    assert pair.ci_low < pair.mean_difference < pair.ci_high
    assert pair.wins + pair.ties + pair.losses == len(qrels)
    assert pair.significant and pair.direction == 1
    frame = comparison.to_dataframe()
    assert len(frame) == 6 and {"p_adjusted", "effect_size", "wins"} <= set(frame.columns)


def test_compare_randomization_is_reproducible_and_two_baselines_are_tested_once():
    qrels, runs = three_runs(1)
    result = evaluate_runs(qrels, runs, ["mrr"])
    config = CompareConfig(baselines=("bm25", "noise"), test="randomization", n_resamples=500, seed=9)
    first, second = compare_systems(result, config), compare_systems(result, config)
    assert first == second
    assert len(first.pairs) == 3  # bm25-student, bm25-noise, noise-student
    assert first.get("noise", "bm25", "mrr") is not None


def test_a_metric_family_corrects_each_metrics_tests_on_their_own():
    qrels, runs = three_runs(2)
    result = evaluate_runs(qrels, runs, ["mrr", "ndcg@10", "recall@10"])
    table = compare_systems(result, CompareConfig(baselines=("bm25", "noise"), test="t"))
    per_metric = compare_systems(result, CompareConfig(baselines=("bm25", "noise"), test="t", family="metric"))
    # The tests themselves do not change; only what each correction counts.
    assert [p.p_value for p in per_metric.pairs] == [p.p_value for p in table.pairs]
    assert table.family_size == 9 and per_metric.family_size == 3
    for metric in result.metrics:
        pairs = [p for p in per_metric.pairs if p.metric == metric]
        np.testing.assert_allclose([p.p_adjusted for p in pairs], correct_p_values([p.p_value for p in pairs], "holm"))
    # A smaller family can only lower a Holm-adjusted p, and here it lowers some.
    adjusted = [(p.p_adjusted, q.p_adjusted) for p, q in zip(per_metric.pairs, table.pairs)]
    assert all(small <= large for small, large in adjusted)
    assert any(small < large for small, large in adjusted)
    board = build_leaderboard(result, per_metric, title="toy")
    assert board.family_size == 3 and any("within each metric (over its 3 tests)" in line for line in board.legend)


@pytest.mark.parametrize(
    "kwargs, message",
    [({"baselines": ()}, "baseline"), ({"test": "z"}, "t, randomization"), ({"correction": "x"}, "holm"),
     ({"alpha": 1.5}, "alpha"), ({"baselines": ("a", "a")}, "repeat"), ({"family": "query"}, "table, metric")],
)
def test_compare_config_is_validated(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CompareConfig(**{"baselines": ("a",), **kwargs})


def test_unknown_baseline_names_the_runs():
    qrels, runs = three_runs()
    result = evaluate_runs(qrels, runs, ["mrr"])
    with pytest.raises(ValueError, match="bm25, student, noise"):
        compare_systems(result, CompareConfig(baselines=("bm26",)))


def test_batched_bootstrap_uses_the_same_resamples_for_every_column():
    rng = np.random.default_rng(8)
    columns = rng.normal(size=(80, 6))
    batched = bootstrap_cis(columns, seed=4, n_resamples=3_000)
    for j in range(columns.shape[1]):
        single = bootstrap_ci(columns[:, j], seed=4, n_resamples=3_000)
        assert batched[j].low == pytest.approx(single.low, abs=1e-12)
        assert batched[j].high == pytest.approx(single.high, abs=1e-12)
    assert bootstrap_cis(columns, seed=5, n_resamples=3_000) != batched
