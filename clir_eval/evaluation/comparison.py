"""Compare systems with baselines: one table of tests over (baseline, system, metric), corrected together or
metric by metric."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from clir_eval.evaluation.evaluate import EvaluationResult
from clir_eval.evaluation.significance import (
    CORRECTIONS,
    DEFAULT_RESAMPLES,
    MIN_QUERIES,
    ConfidenceInterval,
    bootstrap_cis,
    cohens_d_paired,
    correct_p_values,
    get_test,
    win_tie_loss,
)

logger = logging.getLogger(__name__)

#: What the multiple-comparison correction counts as one family: every test of the table (the conservative
#: default), or each metric's tests on their own (one claim per metric, as ranx's Tukey HSD scopes its family).
FAMILIES = ("table", "metric")


def check_test_settings(test: str, correction: str, alpha: float, n_resamples: int, ci_level: float) -> None:
    """Raise ``ValueError`` naming the first setting of a significance protocol that is out of range."""
    get_test(test)
    if correction not in CORRECTIONS:
        raise ValueError(f"unknown correction {correction!r}; valid corrections: {', '.join(CORRECTIONS)}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    if not 0 < ci_level < 1:
        raise ValueError(f"ci_level must be in (0, 1), got {ci_level}")


@dataclass(frozen=True)
class CompareConfig:
    """How systems are compared. Validated on creation; errors name the valid values."""

    baselines: tuple[str, ...]
    test: str = "t"
    correction: str = "holm"
    alpha: float = 0.05
    seed: int = 42
    n_resamples: int = DEFAULT_RESAMPLES
    ci_level: float = 0.95
    family: str = "table"

    def __post_init__(self) -> None:
        object.__setattr__(self, "baselines", tuple(self.baselines))
        if not self.baselines:
            raise ValueError("at least one baseline is needed")
        if len(set(self.baselines)) != len(self.baselines):
            raise ValueError(f"baselines repeat a name: {self.baselines}")
        check_test_settings(self.test, self.correction, self.alpha, self.n_resamples, self.ci_level)
        if self.family not in FAMILIES:
            raise ValueError(f"unknown family {self.family!r}; valid families: {', '.join(FAMILIES)}")


@dataclass(frozen=True)
class PairComparison:
    """One test: ``system`` against ``baseline`` on ``metric`` (difference = system - baseline).

    ``undefined`` gives the reason when the test or the interval could not be computed (fewer than 3
    queries, zero variance of the differences); their values are then NaN and the pair is not significant.
    """

    baseline: str
    system: str
    metric: str
    n_queries: int
    baseline_mean: float
    system_mean: float
    mean_difference: float
    ci_low: float
    ci_high: float
    effect_size: float  # paired Cohen's d
    statistic: float
    p_value: float
    p_adjusted: float
    significant: bool
    wins: int
    ties: int
    losses: int
    undefined: str = ""

    @property
    def direction(self) -> int:
        """+1 when significantly better, -1 when significantly worse, 0 otherwise."""
        if not self.significant:
            return 0
        return 1 if self.mean_difference > 0 else -1


@dataclass(frozen=True)
class Comparison:
    """All pairwise tests of a table, with the settings that produced them."""

    config: CompareConfig
    pairs: tuple[PairComparison, ...] = field(default_factory=tuple)

    def get(self, baseline: str, system: str, metric: str) -> PairComparison | None:
        """The comparison of ``system`` with ``baseline`` on ``metric`` (either order), or None."""
        for pair in self.pairs:
            if pair.metric == metric and {pair.baseline, pair.system} == {baseline, system}:
                return pair
        return None

    @property
    def family_size(self) -> int:
        """The number of tests corrected together: the whole table, or the largest metric's share of it."""
        families = _families([pair.metric for pair in self.pairs], self.config.family)
        return max((len(members) for members in families), default=0)

    def to_dataframe(self) -> "pandas.DataFrame":  # noqa: F821
        """One row per test, columns as the :class:`PairComparison` fields."""
        import dataclasses

        import pandas as pd

        columns = [f.name for f in dataclasses.fields(PairComparison)]
        return pd.DataFrame([dataclasses.asdict(p) for p in self.pairs], columns=columns)


def compare_systems(result: EvaluationResult, config: CompareConfig) -> Comparison:
    """Test every system against every baseline on every metric; correct across the table or per metric.

    A pair of baselines is tested once (the later-listed baseline against the earlier one). Queries that
    are NaN for either run (only with ``judged_queries_only``) are dropped pairwise. The family for the
    correction is every (baseline, system, metric) test in the table, or with ``config.family == "metric"``
    each metric's tests. Confidence intervals of the mean difference are percentile bootstraps seeded with
    ``config.seed`` (the same query resamples for every pair over the same queries); randomization tests get
    a seed derived from ``config.seed`` and the pair.
    """
    missing = [b for b in config.baselines if b not in result.per_query]
    if missing:
        raise ValueError(f"baseline(s) {missing} not among the runs: {', '.join(result.runs)}")
    test = get_test(config.test)
    raw: list[dict] = []
    differences: list[tuple[np.ndarray, np.ndarray]] = []
    done: set[frozenset[str]] = set()
    for b_index, baseline in enumerate(config.baselines):
        for system in result.runs:
            pair_key = frozenset((baseline, system))
            if system == baseline or pair_key in done:
                continue
            done.add(pair_key)
            for m_index, metric in enumerate(result.metrics):
                control = result.per_query[baseline][metric]
                treatment = result.per_query[system][metric]
                keep = ~(np.isnan(control) | np.isnan(treatment))
                control, treatment = control[keep], treatment[keep]
                # Seeds differ per test but are fixed by the config seed, so every test is reproducible
                # on its own and tests are not correlated through a shared stream.
                seed = int(np.random.SeedSequence([config.seed, b_index, m_index, _stable(system)]).generate_state(1)[0])
                options = {"n_resamples": config.n_resamples} if config.test == "randomization" else {}
                outcome = test(control, treatment, seed=seed, **options)
                diff = treatment - control
                differences.append((keep, diff))
                wtl = win_tie_loss(control, treatment)
                raw.append(
                    dict(
                        baseline=baseline,
                        system=system,
                        metric=metric,
                        n_queries=int(keep.sum()),
                        baseline_mean=_mean(control),
                        system_mean=_mean(treatment),
                        mean_difference=_mean(diff),
                        effect_size=cohens_d_paired(control, treatment),
                        statistic=outcome.statistic,
                        p_value=outcome.p_value,
                        wins=wtl.wins,
                        ties=wtl.ties,
                        losses=wtl.losses,
                        undefined="; ".join(filter(None, [outcome.undefined, _ci_undefined(diff.size)])),
                    )
                )
    cis = _difference_cis(differences, config)
    adjusted = _adjusted_p_values(raw, config)
    pairs = tuple(
        PairComparison(**row, ci_low=ci.low, ci_high=ci.high, p_adjusted=float(adj),
                       significant=bool(adj <= config.alpha))
        for row, ci, adj in zip(raw, cis, adjusted)
    )
    logger.info(
        "%d tests (%s, %s correction per %s): %d significant at alpha=%g",
        len(pairs), config.test, config.correction, config.family, sum(p.significant for p in pairs), config.alpha,
    )
    return Comparison(config=config, pairs=pairs)


def _families(metrics: Sequence[str], family: str) -> list[list[int]]:
    """Indices of the tests corrected together, given each test's metric: all of them, or each metric's."""
    if family == "table":
        return [list(range(len(metrics)))] if metrics else []
    groups: dict[str, list[int]] = {}
    for index, metric in enumerate(metrics):
        groups.setdefault(metric, []).append(index)
    return list(groups.values())


def _adjusted_p_values(raw: list[dict], config: CompareConfig) -> np.ndarray:
    """The corrected p-value of every test, in order: over the whole table, or within each metric."""
    adjusted = np.zeros(len(raw))
    for members in _families([row["metric"] for row in raw], config.family):
        adjusted[members] = correct_p_values([raw[i]["p_value"] for i in members], config.correction)
    return adjusted


def _difference_cis(differences: list[tuple[np.ndarray, np.ndarray]], config: CompareConfig) -> list:
    """Bootstrap CIs of every mean difference, seeded by ``config.seed``: differences over the same
    queries share one set of resamples (a paired bootstrap, and one matrix product per set)."""
    groups: dict[bytes, list[int]] = {}
    for index, (keep, _) in enumerate(differences):
        groups.setdefault(keep.tobytes(), []).append(index)
    cis: list = [None] * len(differences)
    for indexes in groups.values():
        if differences[indexes[0]][1].size < MIN_QUERIES:  # see _ci_undefined
            for i in indexes:
                cis[i] = ConfidenceInterval(float("nan"), float("nan"), config.ci_level)
            continue
        columns = np.stack([differences[i][1] for i in indexes], axis=1)
        found = bootstrap_cis(columns, seed=config.seed, level=config.ci_level, n_resamples=config.n_resamples)
        for i, ci in zip(indexes, found):
            cis[i] = ci
    return cis


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else float("nan")


def _ci_undefined(n: int) -> str:
    """Why the bootstrap interval of ``n`` differences is not given, or ``""``."""
    if n < MIN_QUERIES:
        return f"bootstrap interval undefined on {n} quer{'y' if n == 1 else 'ies'} (needs at least {MIN_QUERIES})"
    return ""


def _stable(name: str) -> int:
    """A process-independent integer for a name (Python's ``hash`` of a str is salted per process)."""
    import zlib

    return zlib.crc32(name.encode("utf-8"))
