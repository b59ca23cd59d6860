"""Paired significance tests, multiple-comparison correction, effect sizes and bootstrap intervals.

Every test is a pure function ``test(control, treatment, *, seed) -> TestResult`` over per-query arrays
aligned on the same queries (the ranx pattern). The randomization test is our own: ranx's
``fisher_randomization_test`` seeds the global RNG inside a parallel numba function, so its
``random_seed`` has no effect (ranx issue #70), and it returns ``hits / n`` which can be exactly 0.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Callable, NamedTuple

import numpy as np

logger = logging.getLogger(__name__)

#: Fewest queries a t-test or a bootstrap interval is computed on: with 2, the t-test has one degree of
#: freedom and the bootstrap only three distinct resample means.
MIN_QUERIES = 3
#: Resamples per randomization test / bootstrap unless told otherwise.
DEFAULT_RESAMPLES = 10_000
#: Relative tolerance when comparing a resampled statistic with the observed one: a permutation equal
#: to the observed one must count as "at least as extreme" even if summation order changes the last bit.
_TIE_RTOL = 1e-9


@dataclass(frozen=True)
class TestResult:
    """A two-sided paired test: ``p_value`` in (0, 1], and the test's ``statistic``.

    ``undefined`` says why the test could not be computed (then ``p_value`` and ``statistic`` are NaN, and
    the comparison is neither significant nor counted in a correction's family); empty otherwise.
    """

    __test__ = False  # not a pytest test class

    p_value: float
    statistic: float
    undefined: str = ""


class ConfidenceInterval(NamedTuple):
    """``[low, high]`` at ``level`` (e.g. 0.95)."""

    low: float
    high: float
    level: float


def _paired(control: np.ndarray, treatment: np.ndarray, min_size: int = 2) -> np.ndarray:
    control = np.asarray(control, dtype=np.float64)
    treatment = np.asarray(treatment, dtype=np.float64)
    if control.shape != treatment.shape or control.ndim != 1:
        raise ValueError(f"paired tests need two 1-d arrays of equal length, got {control.shape} and {treatment.shape}")
    if control.size < min_size:
        raise ValueError(f"paired tests need at least 2 queries, got {control.size}")
    if not (np.isfinite(control).all() and np.isfinite(treatment).all()):
        raise ValueError("per-query scores must be finite (drop queries that are not averaged first)")
    return treatment - control


def paired_t_test(control: np.ndarray, treatment: np.ndarray, *, seed: int | None = None) -> TestResult:
    """Two-sided paired Student's t-test (``scipy.stats.ttest_rel``; ranx's ``student``).

    ``t = mean(d) / (sd(d) / sqrt(n))`` with ``d = treatment - control`` and ``sd`` with ``n - 1``.
    ``seed`` is accepted for a uniform signature and unused.

    Undefined cases are reported (``undefined`` set, p and t NaN), never as p = 0: fewer than
    :data:`MIN_QUERIES` queries, or every difference equal and not 0 (``sd = 0``, so ``t`` would be
    infinite; equal up to rounding counts, as scipy's t is then float noise). When every difference is 0 we return ``p = 1, t = 0``: there is no difference to find.
    """
    from scipy import stats

    diff = _paired(control, treatment, min_size=0)
    if diff.size < MIN_QUERIES:
        return TestResult(float("nan"), float("nan"),
                          f"t-test undefined on {diff.size} quer{'y' if diff.size == 1 else 'ies'} "
                          f"(needs at least {MIN_QUERIES})")
    if not diff.any():
        return TestResult(p_value=1.0, statistic=0.0)
    if np.ptp(diff) <= _TIE_RTOL * np.abs(diff).max():  # equal up to rounding: sd is 0 or float noise
        return TestResult(float("nan"), float("nan"),
                          f"t-test undefined: every per-query difference is {diff.mean():.6g} (zero variance)")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = stats.ttest_rel(treatment, control)
    for warning in caught:  # e.g. precision loss on nearly equal differences: ours to report, not scipy's
        logger.info("t-test on %d queries: %s", diff.size, warning.message)
    return TestResult(p_value=float(result.pvalue), statistic=float(result.statistic))


def randomization_test(
    control: np.ndarray, treatment: np.ndarray, *, seed: int, n_resamples: int = DEFAULT_RESAMPLES
) -> TestResult:
    """Two-sided paired randomization (sign-flip permutation) test of the mean difference.

    Under H0 each query's two scores are exchangeable, so each difference ``d_i`` keeps or flips its sign
    with probability 1/2. ``p = (1 + #{|mean(s * d)| >= |mean(d)|}) / (1 + n_resamples)`` (Phipson &
    Smyth 2010: never 0, valid for Monte-Carlo sampling; Smucker, Allan & Carterette, CIKM 2007).
    Resamples come from ``np.random.default_rng(seed)``: same seed, same p-value.

    Returns:
        ``TestResult(p_value, statistic=mean(treatment - control))``.
    """
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    diff = _paired(control, treatment)
    observed = float(diff.mean())
    threshold = abs(observed) * (1 - _TIE_RTOL)
    rng = np.random.default_rng(seed)
    hits = 0
    chunk = max(1, min(n_resamples, 4_000_000 // diff.size))  # bound memory: chunk x n signs at a time
    done = 0
    while done < n_resamples:
        size = min(chunk, n_resamples - done)
        signs = rng.integers(0, 2, size=(size, diff.size), dtype=np.int8) * 2 - 1
        means = (signs @ diff) / diff.size
        hits += int(np.count_nonzero(np.abs(means) >= threshold))
        done += size
    return TestResult(p_value=(hits + 1) / (n_resamples + 1), statistic=observed)


TESTS: dict[str, Callable[..., TestResult]] = {"t": paired_t_test, "randomization": randomization_test}


def get_test(name: str) -> Callable[..., TestResult]:
    """The test called ``name`` (``"t"`` or ``"randomization"``). Raises ValueError naming the valid ones."""
    if name not in TESTS:
        raise ValueError(f"unknown significance test {name!r}; valid tests: {', '.join(TESTS)}")
    return TESTS[name]


CORRECTIONS = ("holm", "bonferroni", "none")


def correct_p_values(p_values: Sequence[float] | np.ndarray, method: str = "holm") -> np.ndarray:
    """Adjust a family of p-values for multiple comparisons; reject H0 where ``adjusted <= alpha``.

    * ``bonferroni``: ``min(1, m p_i)``.
    * ``holm`` (Holm 1979, step-down): with ``p_(1) <= ... <= p_(m)``,
      ``adj_(j) = max_{i <= j} min(1, (m - i + 1) p_(i))``; controls the family-wise error like Bonferroni
      and is uniformly more powerful.
    * ``none``: unchanged.

    NaN entries (comparisons that were not run) stay NaN and do not count in ``m``.
    """
    if method not in CORRECTIONS:
        raise ValueError(f"unknown correction {method!r}; valid corrections: {', '.join(CORRECTIONS)}")
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError("p_values must be 1-d")
    valid = ~np.isnan(p)
    if ((p[valid] < 0) | (p[valid] > 1)).any():
        raise ValueError("p-values must lie in [0, 1]")
    adjusted = p.copy()
    m = int(valid.sum())
    if method == "none" or m == 0:
        return adjusted
    values = p[valid]
    if method == "bonferroni":
        adjusted[valid] = np.minimum(1.0, m * values)
        return adjusted
    order = np.argsort(values, kind="stable")
    scaled = np.minimum(1.0, (m - np.arange(m)) * values[order])
    stepped = np.maximum.accumulate(scaled)
    out = np.empty(m)
    out[order] = stepped
    adjusted[valid] = out
    return adjusted


def cohens_d_paired(control: np.ndarray, treatment: np.ndarray) -> float:
    """Paired Cohen's d (d_z): ``mean(d) / sd(d)``, ``d = treatment - control``, ``sd`` with ``n - 1``.

    NaN when every difference is equal (``sd = 0``) or there are fewer than 2. Cohen (1988); Lakens (2013), eq. 6.
    """
    diff = _paired(control, treatment, min_size=0)
    sd = float(diff.std(ddof=1)) if diff.size > 1 else 0.0
    if sd == 0.0:
        return float("nan")
    return float(diff.mean()) / sd


def bootstrap_ci(
    values: np.ndarray, *, seed: int, level: float = 0.95, n_resamples: int = DEFAULT_RESAMPLES
) -> ConfidenceInterval:
    """Percentile bootstrap interval of the mean of ``values`` (e.g. per-query differences, or scores).

    Resamples queries with replacement ``n_resamples`` times from ``np.random.default_rng(seed)``
    (Efron & Tibshirani 1993, ch. 13). Same resamples as any column of :func:`bootstrap_cis` with that seed.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError("bootstrap_ci needs a non-empty 1-d array")
    return bootstrap_cis(values[:, None], seed=seed, level=level, n_resamples=n_resamples)[0]


def bootstrap_cis(
    columns: np.ndarray, *, seed: int, level: float = 0.95, n_resamples: int = DEFAULT_RESAMPLES
) -> list[ConfidenceInterval]:
    """Percentile bootstrap intervals of the mean of each column of ``columns`` ``(n queries, k)``.

    Every column is resampled with the same query sets (a paired bootstrap: the intervals of several
    systems or differences on one table come from one set of resamples), drawn from
    ``np.random.default_rng(seed)`` by :func:`bootstrap_means`.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    return percentile_cis(bootstrap_means(columns, seed=seed, n_resamples=n_resamples), level=level)


def percentile_cis(means: np.ndarray, *, level: float = 0.95) -> list[ConfidenceInterval]:
    """Percentile intervals of each column of resampled statistics ``means`` ``(n_resamples, k)``."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    tail = (1 - level) / 2
    low, high = np.quantile(np.asarray(means, dtype=np.float64), [tail, 1 - tail], axis=0)
    return [ConfidenceInterval(low=float(lo), high=float(hi), level=level)
            for lo, hi in zip(np.atleast_1d(low), np.atleast_1d(high))]


def bootstrap_means(columns: np.ndarray, *, seed: int, n_resamples: int = DEFAULT_RESAMPLES) -> np.ndarray:
    """The means of each column of ``columns`` ``(n queries, k)`` over ``n_resamples`` query resamples.

    Queries are drawn with replacement from ``np.random.default_rng(seed)``, the same draws for every column.
    With many columns the resample means are one matrix product ``counts @ columns / n`` (``counts[r, i]`` =
    how often query ``i`` is drawn in resample ``r``) instead of ``k`` gathers (equal up to rounding in the
    last bits).

    Returns:
        float64 ``(n_resamples, k)``.
    """
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    columns = np.asarray(columns, dtype=np.float64)
    if columns.ndim != 2 or columns.shape[0] == 0:
        raise ValueError(f"bootstrap_cis needs a non-empty (n, k) array, got shape {columns.shape}")
    if not np.isfinite(columns).all():
        raise ValueError("bootstrap values must be finite (drop queries that are not averaged first)")
    n = columns.shape[0]
    rng = np.random.default_rng(seed)
    means = np.empty((n_resamples, columns.shape[1]))
    chunk = max(1, min(n_resamples, 2_000_000 // n))  # bound memory: chunk x n counts at a time
    for start in range(0, n_resamples, chunk):
        stop = min(n_resamples, start + chunk)
        size = stop - start
        drawn = rng.integers(0, n, size=(size, n))
        if columns.shape[1] <= 4:  # few columns: gathering is cheaper than building the counts
            for j in range(columns.shape[1]):
                means[start:stop, j] = np.take(columns[:, j], drawn).mean(axis=1)
        else:
            counts = np.bincount((drawn + n * np.arange(size)[:, None]).ravel(), minlength=size * n)
            means[start:stop] = counts.reshape(size, n).astype(np.float64) @ columns / n
    return means


class WinTieLoss(NamedTuple):
    """Queries where treatment beats, equals, or loses to control."""

    wins: int
    ties: int
    losses: int


def win_tie_loss(control: np.ndarray, treatment: np.ndarray, tolerance: float = 1e-12) -> WinTieLoss:
    """Count per-query wins/ties/losses of ``treatment`` over ``control`` (|difference| <= tolerance ties)."""
    diff = _paired(control, treatment, min_size=0)
    wins = int(np.count_nonzero(diff > tolerance))
    losses = int(np.count_nonzero(diff < -tolerance))
    return WinTieLoss(wins=wins, ties=diff.size - wins - losses, losses=losses)
