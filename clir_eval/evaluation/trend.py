"""Gain against the start, across languages: does a method help more where the backbone is weaker?

Per language, ``x`` is the start system's mean score (how well the untrained backbone already knows the
language) and ``y`` is an effect: a method's mean gain over the start, or a named contrast between two
methods (e.g. OT − KD), each with a paired bootstrap CI and a paired test, Holm-corrected over the
languages of that effect. Across languages, the trend of ``y`` on ``x`` is an ordinary least-squares slope.

The primary trend test is a permutation test of that slope over languages, with a two-level bootstrap CI:

* with 9-14 languages there are too few points to trust the t-test of a regression slope (normal residuals
  of equal variance); permuting ``y`` across languages needs only that the languages are exchangeable under
  "no trend", and it is exact (every order enumerated) when there are few enough languages;
* the slope is in the metric's own units (gain per unit of start score), so the CI says how large a trend
  the data allow, which a rank statistic cannot;
* the CI resamples languages and, within each, queries (Ren et al. 2010, the hierarchical bootstrap), so it
  carries both the choice of languages and each language's query noise.

Spearman's rho with a permutation p-value over the same permutations is reported as a secondary check: it
ignores how far apart the languages are, so one language far from the others cannot make the trend alone.

Caveat built into the design: a gain over the start (``method - start``) shares the start's query noise
with ``x``, so a negative slope appears by chance (regression to the mean); a contrast between two trained
systems (OT − KD) does not share it and is the cleaner question. Languages are not a random sample of
"languages", so the trend describes these languages, not languages in general.
"""

from __future__ import annotations

import dataclasses
import html
import itertools
import json
import logging
import math
import os
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from clir_eval.evaluation.comparison import check_test_settings
from clir_eval.evaluation.significance import (
    _TIE_RTOL,
    DEFAULT_RESAMPLES,
    MIN_QUERIES,
    bootstrap_means,
    correct_p_values,
    get_test,
    percentile_cis,
)
from clir_eval.io import atomic_write, write_csv

logger = logging.getLogger(__name__)

#: The placeholder a system template names its language with (``{lang}-kd`` is ``sw-kd`` on sw).
LANG = "{lang}"
_TEST_NAMES = {"t": "paired t-test", "randomization": "paired randomization test"}


class TrendInputError(ValueError):
    """Systems or contrasts that cannot be found; one line per problem (``errors``)."""

    def __init__(self, lines: Sequence[str]) -> None:
        self.errors = list(lines)
        super().__init__("\n".join(self.errors))


@dataclass(frozen=True)
class TrendConfig:
    """How the per-language tests and the trend are computed. Validated on creation."""

    test: str = "randomization"
    correction: str = "holm"
    alpha: float = 0.05
    seed: int = 42
    n_resamples: int = DEFAULT_RESAMPLES
    ci_level: float = 0.95

    def __post_init__(self) -> None:
        check_test_settings(self.test, self.correction, self.alpha, self.n_resamples, self.ci_level)


class Effect(NamedTuple):
    """``treatment - control``, both labels of systems (the start or a method)."""

    treatment: str
    control: str

    @property
    def name(self) -> str:
        return f"{self.treatment} − {self.control}"


@dataclass(frozen=True)
class LanguageEffect:
    """One effect on one language: ``x = start_mean``, ``y = difference`` (treatment - control)."""

    lang: str
    effect: str
    treatment: str
    control: str
    treatment_system: str
    control_system: str
    n_queries: int
    start_mean: float
    control_mean: float
    treatment_mean: float
    difference: float
    ci_low: float
    ci_high: float
    statistic: float
    p_value: float
    p_adjusted: float
    significant: bool
    undefined: str = ""


@dataclass(frozen=True)
class TrendFit:
    """The trend of one effect across languages: ``y = intercept + slope * x`` by least squares.

    ``ci_low``/``ci_high``: two-level bootstrap of the slope (``degenerate`` resamples, where every drawn
    language was the same one, are left out). ``p_value``: permutation test of the slope over languages
    (``exact``: all ``permutations`` orders enumerated, else Monte-Carlo with (hits + 1) / (n + 1));
    ``p_adjusted``: over the trend tests of every effect. ``spearman_rho``/``spearman_p``: the secondary test.
    """

    effect: str
    treatment: str
    control: str
    n_languages: int
    slope: float
    intercept: float
    ci_low: float
    ci_high: float
    p_value: float
    p_adjusted: float
    significant: bool
    spearman_rho: float
    spearman_p: float
    permutations: int
    exact: bool
    degenerate: int = 0
    undefined: str = ""


@dataclass(frozen=True)
class TrendAnalysis:
    """Per-language effects and their trends across languages, computed once and rendered many ways.

    Attributes:
        metric: the metric analysed.
        start: the start's label; ``x`` is its mean.
        effects: the effects, in order (method gains, then contrasts).
        languages: sorted by the start's mean, weakest first.
        start_systems: ``{lang: the start's system name there}``.
        rows: one :class:`LanguageEffect` per effect and language (effect-major).
        fits: one :class:`TrendFit` per effect.
        config: the settings (rendered into the legend).
    """

    metric: str
    start: str
    effects: tuple[Effect, ...]
    languages: tuple[str, ...]
    start_systems: Mapping[str, str]
    rows: tuple[LanguageEffect, ...]
    fits: tuple[TrendFit, ...]
    config: TrendConfig
    title: str = ""
    decimals: int = 4

    def row(self, lang: str, effect: str) -> LanguageEffect:
        """The row of ``effect`` (its name, e.g. ``"kd+ot − kd"``) on ``lang``."""
        for row in self.rows:
            if row.lang == lang and row.effect == effect:
                return row
        raise KeyError(f"no row for {effect!r} on {lang!r}")

    def fit(self, effect: str) -> TrendFit:
        """The trend of ``effect`` (its name)."""
        for fit in self.fits:
            if fit.effect == effect:
                return fit
        raise KeyError(f"no trend for {effect!r}; effects: {', '.join(e.name for e in self.effects)}")

    # ---- data ---------------------------------------------------------------------------------------
    def to_frame(self) -> "pandas.DataFrame":  # noqa: F821
        """One row per effect and language, columns as the :class:`LanguageEffect` fields."""
        import pandas as pd

        columns = [f.name for f in dataclasses.fields(LanguageEffect)]
        return pd.DataFrame([dataclasses.asdict(r) for r in self.rows], columns=columns)

    def fits_frame(self) -> "pandas.DataFrame":  # noqa: F821
        """One row per effect, columns as the :class:`TrendFit` fields."""
        import pandas as pd

        columns = [f.name for f in dataclasses.fields(TrendFit)]
        return pd.DataFrame([dataclasses.asdict(f) for f in self.fits], columns=columns)

    def to_dict(self) -> dict:
        """JSON-ready: settings, languages, per-language rows and fits at full precision, the legend."""
        return {
            "title": self.title,
            "metric": self.metric,
            "start": self.start,
            "start_systems": dict(self.start_systems),
            "effects": [{"name": e.name, "treatment": e.treatment, "control": e.control} for e in self.effects],
            "languages": list(self.languages),
            "settings": dataclasses.asdict(self.config),
            "rows": [_json_ready(dataclasses.asdict(r)) for r in self.rows],
            "fits": [_json_ready(dataclasses.asdict(f)) for f in self.fits],
            "legend": list(self.legend),
        }

    @property
    def legend(self) -> tuple[str, ...]:
        """What x, y, the intervals, the tests and the marks are, from the settings."""
        c = self.config
        n_lang = len(self.languages)
        test = _TEST_NAMES[c.test] + (f" ({c.n_resamples:,} resamples)" if c.test == "randomization" else "")
        starts = sorted(set(self.start_systems.values()))
        lines = [
            f"x: the start's mean {self.metric} on the language (start: {', '.join(starts)}); "
            f"y: treatment − control, mean {self.metric} over the same queries.",
            f"[low, high]: {c.ci_level:.0%} percentile bootstrap interval over queries ({c.n_resamples:,} resamples, "
            f"seed {c.seed}); p: two-sided {test}, {_CORRECTION[c.correction]} over the {n_lang} languages of "
            f"each effect; *: p <= {c.alpha:g}.",
            f"Trend: least-squares slope of y on x over the {n_lang} languages; interval: two-level bootstrap "
            f"(languages, then queries within each); p: permutation test of the slope over languages, "
            f"{_CORRECTION[c.correction]} over the {len(self.fits)} trend tests; Spearman's rho with a permutation "
            f"p over the same orders (secondary).",
            "A gain over the start shares the start's query noise with x, so a negative slope can arise by chance; "
            "a contrast between two trained systems does not. Few languages: the trend describes these languages.",
        ]
        lines += [f"Not computed: {f.effect}: {f.undefined}." for f in self.fits if f.undefined]
        lines += [f"Not tested: {r.effect} on {r.lang}: {r.undefined}." for r in self.rows if r.undefined]
        return tuple(lines)

    # ---- renderers ----------------------------------------------------------------------------------
    def to_markdown(self) -> str:
        """Two GitHub Markdown tables (per language, then the trends) with the legend below."""
        from clir_eval.evaluation.leaderboard import _escape_markdown as esc

        d = self.decimals
        header = ["lang", f"start {esc(self.metric)} (x)", "queries"] + [esc(e.name) for e in self.effects]
        lines = [f"**{esc(self.title)}**", ""] if self.title else []
        lines += [_md_row(header), _md_row(["---"] + ["---:"] * (len(header) - 1))]
        for lang in self.languages:
            first = self.row(lang, self.effects[0].name)
            cells = [esc(lang), f"{first.start_mean:.{d}f}", str(first.n_queries)]
            for effect in self.effects:
                r = self.row(lang, effect.name)
                cell = f"{r.difference:+.{d}f} [{r.ci_low:+.{d}f}, {r.ci_high:+.{d}f}], p {_p(r.p_adjusted)}"
                cells.append(cell + ("\\*" if r.significant else ""))
            lines.append(_md_row(cells))
        lines += ["", _md_row(["effect", "slope", f"{self.config.ci_level:.0%} CI", "p", "p corrected",
                               "Spearman rho", "p (rho)", "languages"]),
                  _md_row(["---"] + ["---:"] * 7)]
        for f in self.fits:
            lines.append(_md_row([
                esc(f.effect), f"{f.slope:+.{d}f}", f"[{f.ci_low:+.{d}f}, {f.ci_high:+.{d}f}]",
                _p(f.p_value), _p(f.p_adjusted) + ("\\*" if f.significant else ""), f"{f.spearman_rho:+.3f}",
                _p(f.spearman_p), str(f.n_languages),
            ]))
        lines += [""] + [f"- {esc(line)}" for line in self.legend]
        return "\n".join(lines) + "\n"

    def to_csv(self) -> str:
        """:meth:`to_frame` as CSV, floats at full precision."""
        return self.to_frame().to_csv(index=False, lineterminator="\n", float_format=lambda x: repr(float(x)))

    def to_json(self) -> str:
        """:meth:`to_dict` as indented JSON (NaN as null)."""
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"

    def to_html(self) -> str:
        """The two tables as an HTML fragment, names escaped."""
        frame = self.to_frame()
        return (frame.to_html(index=False, border=0, classes="trend", escape=True)
                + self.fits_frame().to_html(index=False, border=0, classes="trend-fit", escape=True)
                + "<ul class=\"legend\">" + "".join(f"<li>{html.escape(x)}</li>" for x in self.legend) + "</ul>")

    def save(self, directory: str | os.PathLike, stem: str = "trend") -> list[Path]:
        """Write ``stem.md``, ``stem.csv`` (per language), ``stem-fit.csv`` (the trends) and ``stem.json``."""
        directory = Path(directory)
        written = []
        for suffix, text in (("md", self.to_markdown()), ("csv", self.to_csv()), ("json", self.to_json())):
            path = directory / f"{stem}.{suffix}"
            with atomic_write(path) as handle:
                handle.write(text)
            written.append(path)
        written.append(write_csv(self.fits_frame(), directory / f"{stem}-fit.csv"))
        return written


_CORRECTION = {"holm": "Holm-corrected", "bonferroni": "Bonferroni-corrected", "none": "uncorrected"}


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _p(value: float) -> str:
    # Two significant digits: a resampled p is (k + 1) / (n + 1), and four digits print that as 0.0008999.
    return "n/a" if math.isnan(value) else f"{value:.2g}"


def _json_ready(row: dict) -> dict:
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}


# ---- system names ---------------------------------------------------------------------------------------
def parse_system(spec: str) -> tuple[str, str]:
    """``"LABEL=TEMPLATE"`` or ``"TEMPLATE"`` → ``(label, template)``.

    Without a label, the label is the template less ``{lang}`` and one separator beside it:
    ``{lang}-kd+ot`` → ``kd+ot``, ``student-init`` → ``student-init``.
    """
    label, sep, template = spec.partition("=")
    if not sep:
        template = spec
        label = spec
        for cut in (LANG + "-", LANG + "_", "-" + LANG, "_" + LANG, LANG):
            if cut in label:
                label = label.replace(cut, "", 1)
                break
    if not label or not template:
        raise ValueError(f"{spec!r}: empty system name or label")
    return label, template


def parse_contrast(spec: str) -> Effect:
    """``"TREATMENT:CONTROL"`` (labels) → :class:`Effect`."""
    treatment, sep, control = spec.partition(":")
    if not sep or not treatment or not control:
        raise ValueError(f"contrast {spec!r}: give it as TREATMENT:CONTROL, e.g. kd+ot:kd")
    return Effect(treatment, control)


def resolve(template: str, lang: str) -> str:
    """The system a template names on ``lang`` (``{lang}-kd`` → ``sw-kd``; no placeholder: itself)."""
    return template.replace(LANG, lang)


# ---- the analysis ------------------------------------------------------------------------------------------
def trend_analysis(
    scores: Mapping[str, Mapping[str, np.ndarray]],
    *,
    start: str,
    methods: Sequence[str],
    contrasts: Sequence[Effect | tuple[str, str]] = (),
    metric: str = "mrr",
    config: TrendConfig = TrendConfig(),
    systems: Mapping[str, Mapping[str, str]] | None = None,
    title: str = "",
) -> TrendAnalysis:
    """Per-language effects against the start and between methods, and their trends on the start's score.

    Args:
        scores: ``{lang: {label: per-query scores}}``, float ``(n_lang,)`` aligned on the same queries within a
            language; a query NaN for any label of a language is dropped from all of them.
        start: label of the start system (``x`` is its mean).
        methods: labels of the methods; each gets the effect ``method − start``.
        contrasts: ``(treatment, control)`` label pairs, e.g. ``("kd+ot", "kd")``.
        systems: ``{lang: {label: system name}}`` for the tables (default: the label).

    Seeds: each language's query resamples come from ``(seed, lang)`` and its tests from ``(seed, lang,
    effect)``, so a language's numbers do not depend on which other languages are analysed; each trend's
    resamples and permutations come from ``(seed, effect)``.
    """
    effects = [Effect(m, start) for m in methods] + [Effect(*c) for c in contrasts]
    effects = list(dict.fromkeys(effects))
    if not effects:
        raise ValueError("no effect to analyse: give at least one method or contrast")
    labels = list(dict.fromkeys([start, *methods, *(side for e in effects for side in e)]))
    if not scores:
        raise ValueError("no language to analyse")
    missing = [f"{lang}: no scores for {label!r}" for lang, by_label in scores.items() for label in labels
               if label not in by_label]
    if missing:
        raise TrendInputError(missing)
    test = get_test(config.test)
    options = {"n_resamples": config.n_resamples} if config.test == "randomization" else {}

    raw: dict[tuple[str, Effect], dict] = {}
    inner: dict[str, np.ndarray] = {}  # lang -> (n_resamples, 1 + n_effects): start mean, then each effect
    start_means: dict[str, float] = {}
    for lang, by_label in scores.items():
        table = np.stack([np.asarray(by_label[label], dtype=np.float64) for label in labels], axis=1)
        table = table[~np.isnan(table).any(axis=1)]
        if table.shape[0] < MIN_QUERIES:
            raise ValueError(f"{lang}: {table.shape[0]} queries scored by every system (needs at least {MIN_QUERIES})")
        column = {label: table[:, i] for i, label in enumerate(labels)}
        diffs = [column[e.treatment] - column[e.control] for e in effects]
        inner[lang] = bootstrap_means(np.stack([column[start], *diffs], axis=1),
                                      seed=_seed(config.seed, lang), n_resamples=config.n_resamples)
        cis = percentile_cis(inner[lang][:, 1:], level=config.ci_level)
        start_means[lang] = float(column[start].mean())
        names = (systems or {}).get(lang, {})
        for effect, diff, ci in zip(effects, diffs, cis):
            outcome = test(column[effect.control], column[effect.treatment],
                           seed=_seed(config.seed, lang, effect.name), **options)
            raw[lang, effect] = dict(
                lang=lang, effect=effect.name, treatment=effect.treatment, control=effect.control,
                treatment_system=names.get(effect.treatment, effect.treatment),
                control_system=names.get(effect.control, effect.control),
                n_queries=int(table.shape[0]), start_mean=start_means[lang],
                control_mean=float(column[effect.control].mean()),
                treatment_mean=float(column[effect.treatment].mean()),
                difference=float(diff.mean()), ci_low=ci.low, ci_high=ci.high,
                statistic=outcome.statistic, p_value=outcome.p_value, undefined=outcome.undefined,
            )
    languages = tuple(sorted(scores, key=lambda lang: (start_means[lang], lang)))
    rows = []
    for effect in effects:
        adjusted = correct_p_values([raw[lang, effect]["p_value"] for lang in languages], config.correction)
        rows += [LanguageEffect(**raw[lang, effect], p_adjusted=float(adj),
                                significant=bool(adj <= config.alpha))  # NaN <= alpha is False
                 for lang, adj in zip(languages, adjusted)]

    x = np.array([start_means[lang] for lang in languages])
    stacked = np.stack([inner[lang] for lang in languages])  # (languages, resamples, 1 + effects)
    fits = [_fit(effect, x, np.array([raw[lang, effect]["difference"] for lang in languages]),
                 stacked[:, :, 0], stacked[:, :, 1 + i], config) for i, effect in enumerate(effects)]
    adjusted = correct_p_values([f["p_value"] for f in fits], config.correction)
    fits = tuple(TrendFit(**f, p_adjusted=float(adj), significant=bool(adj <= config.alpha))
                 for f, adj in zip(fits, adjusted))
    logger.info("trend of %d effects over %d languages: %s", len(effects), len(languages),
                "; ".join(f"{f.effect} slope {f.slope:+.4f} (p {f.p_value:.3g})" for f in fits))
    return TrendAnalysis(
        metric=metric, start=start, effects=tuple(effects), languages=languages,
        start_systems={lang: (systems or {}).get(lang, {}).get(start, start) for lang in languages},
        rows=tuple(rows), fits=fits, config=config, title=title,
    )


def ols_slopes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least-squares slope of each row of ``y`` on the same row of ``x`` (both ``(..., n)``).

    ``slope = sum((x - mean x)(y - mean y)) / sum((x - mean x)^2)``; NaN where ``x`` is constant.
    """
    xc = x - x.mean(axis=-1, keepdims=True)
    yc = y - y.mean(axis=-1, keepdims=True)
    sxx = (xc * xc).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sxx > 0, (xc * yc).sum(axis=-1) / np.where(sxx > 0, sxx, 1.0), np.nan)


def _fit(effect: Effect, x: np.ndarray, y: np.ndarray, x_inner: np.ndarray, y_inner: np.ndarray,
         config: TrendConfig) -> dict:
    """The slope of ``y`` on ``x``, its two-level bootstrap interval and its permutation p-values.

    ``x_inner``/``y_inner``: ``(languages, resamples)`` query-resample means of each language (the inner level).
    """
    n = x.size
    base = dict(effect=effect.name, treatment=effect.treatment, control=effect.control, n_languages=n)
    nan = float("nan")
    undefined = ""
    if n < 3:
        undefined = f"{n} language{'s' if n != 1 else ''} (a trend needs at least 3)"
    elif np.ptp(x) == 0:
        undefined = "every language has the same start score"
    if undefined:
        return dict(base, slope=nan, intercept=nan, ci_low=nan, ci_high=nan, p_value=nan, spearman_rho=nan,
                    spearman_p=nan, permutations=0, exact=False, undefined=undefined)
    slope = float(ols_slopes(x, y))
    intercept = float(y.mean() - slope * x.mean())

    # Two-level bootstrap: draw languages with replacement, then for each drawn language one of its query
    # resamples (drawn independently, so a language drawn twice gets two different query resamples).
    rng = np.random.default_rng(_seed(config.seed, effect.name, "bootstrap"))
    r = config.n_resamples
    langs = rng.integers(0, n, size=(r, n))
    draws = rng.integers(0, x_inner.shape[1], size=(r, n))
    slopes = ols_slopes(x_inner[langs, draws], y_inner[langs, draws])
    valid = slopes[~np.isnan(slopes)]  # NaN: every drawn language the same one
    ci = percentile_cis(valid[:, None], level=config.ci_level)[0] if valid.size else None

    # Permutation test: under "no trend" the languages' y are exchangeable given x. Every order when there are
    # few enough, else Monte-Carlo orders; Spearman's rho uses the same orders.
    from scipy.stats import rankdata

    rx, ry = rankdata(x), rankdata(y)
    exact = math.factorial(n) <= r
    if exact:
        orders = np.array(list(itertools.permutations(range(n))))
    else:
        orders = np.argsort(np.random.default_rng(_seed(config.seed, effect.name, "permutation")).random((r, n)),
                            axis=1)
    rho = float(np.corrcoef(rx, ry)[0, 1]) if np.ptp(ry) > 0 else nan

    def p_of(observed: float, permuted: np.ndarray) -> float:
        if math.isnan(observed):
            return nan
        hits = int(np.count_nonzero(np.abs(permuted) >= abs(observed) * (1 - _TIE_RTOL)))
        # Exact: the identity order is among the orders, so hits >= 1; Monte-Carlo: Phipson & Smyth (2010).
        return hits / len(permuted) if exact else (hits + 1) / (len(permuted) + 1)

    p = p_of(slope, ols_slopes(np.broadcast_to(x, orders.shape), y[orders]))
    # With x's ranks fixed, rho is a fixed multiple of the slope of y's ranks on x's ranks.
    rho_p = p_of(rho, ols_slopes(np.broadcast_to(rx, orders.shape), ry[orders]))
    return dict(base, slope=slope, intercept=intercept, ci_low=ci.low if ci else nan, ci_high=ci.high if ci else nan,
                p_value=p, spearman_rho=rho, spearman_p=rho_p, permutations=len(orders), exact=exact,
                degenerate=int(r - valid.size))


def _seed(seed: int, *names: str) -> int:
    """A seed fixed by ``seed`` and the names (process-independent: crc32, not the salted ``hash``)."""
    words = [seed, *(zlib.crc32(name.encode("utf-8")) for name in names)]
    return int(np.random.SeedSequence(words).generate_state(1)[0])


# ---- from a results directory -----------------------------------------------------------------------------
def trend_from_results(
    results: "ResultsManifest",  # noqa: F821
    *,
    start: str,
    methods: Sequence[str],
    contrasts: Sequence[str] = (),
    metric: str = "mrr",
    collection: str | None = None,
    languages: Sequence[str] | None = None,
    config: TrendConfig = TrendConfig(),
    trec_eval_version: int | None = None,
    via: Mapping[str, str] | None = None,
) -> TrendAnalysis:
    """Read the runs a trend needs from a results directory, evaluate ``metric`` and analyse them.

    ``start`` and ``methods`` are ``[LABEL=]TEMPLATE`` (see :func:`parse_system`); a template's ``{lang}`` is
    each language's code, or the code ``via`` gives it: ``via={"am": "ha"}`` reads ``ha-kd`` on am's queries
    (a zero-shot language through the students of a trained one). ``contrasts`` are ``TREATMENT:CONTROL``
    labels. Every system is looked up before any run is read: what is missing raises
    :class:`TrendInputError`, one line per (language, system).
    """
    from clir_eval.collections.readers import read_qrels
    from clir_eval.evaluation.evaluate import DEFAULT_TREC_EVAL_VERSION, evaluate_runs, qrels_from_records
    from clir_eval.retrieval.runs import read_run

    problems: list[str] = []
    specs = [parse_system(start)] + [parse_system(m) for m in methods]
    labels = [label for label, _ in specs]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        problems.append(f"two systems share the label(s) {repeated}; name them as LABEL=TEMPLATE")
    parsed = []
    for spec in contrasts:
        effect = parse_contrast(spec)
        parsed += [effect]
        problems += [f"contrast {spec!r}: {side!r} is not a label of --start or --method ({', '.join(labels)})"
                     for side in effect if side not in labels]
    collections = sorted({e.collection for e in results.runs})
    if collection is None:
        if len(collections) > 1:
            problems.append(f"{results.root}: several collections ({', '.join(collections)}); "
                            "choose one with --collection")
        collection = collections[0]
    elif collection not in collections:
        problems.append(f"{results.root}: no collection {collection!r}; collections: {', '.join(collections)}")
    entries = {(e.lang, e.system): e for e in results.runs if e.collection == collection}
    present = sorted({lang for lang, _ in entries})
    if languages:
        problems += [f"{results.root}: no language {lang!r} in {collection}; languages: {', '.join(present)}"
                     for lang in languages if lang not in present]
    languages = list(dict.fromkeys(languages or present))
    found: dict[str, dict[str, str]] = {}
    for lang in languages:
        if lang not in present:
            continue
        found[lang] = {}
        code = (via or {}).get(lang, lang)
        for label, template in specs:
            system = resolve(template, code)
            if (lang, system) in entries:
                found[lang][label] = system
            else:
                source = f"{template!r}" + (f" via {code!r}" if code != lang else "")
                problems.append(f"{results.root}: no run {system!r} for {collection}/{lang} (from {source}); "
                                "restrict the languages with --lang")
    if problems:
        raise TrendInputError(problems)

    version = DEFAULT_TREC_EVAL_VERSION if trec_eval_version is None else trec_eval_version
    scores: dict[str, dict[str, np.ndarray]] = {}
    name = metric
    for lang, by_label in found.items():
        runs = [entries[lang, system] for system in dict.fromkeys(by_label.values())]
        qrels_paths = {e.qrels for e in runs}
        if len(qrels_paths) != 1:
            raise ValueError(f"{collection}/{lang}: runs use different qrels files {sorted(map(str, qrels_paths))}")
        qrels = qrels_from_records(read_qrels(qrels_paths.pop()))
        result = evaluate_runs(qrels, {e.system: read_run(e.path) for e in runs}, [metric], trec_eval_version=version)
        name = result.metrics[0]
        scores[lang] = {label: result.per_query[system][name] for label, system in by_label.items()}
    title = f"{collection}: {name} gain against {specs[0][0]}, across languages"
    routes = [f"{lang} through {code}" for lang, code in (via or {}).items() if lang in found and code != lang]
    if routes:
        title += f" (zero-shot: {', '.join(routes)})"
    return trend_analysis(
        scores, start=specs[0][0], methods=labels[1:], contrasts=parsed, metric=name, config=config,
        systems=found, title=title,
    )
