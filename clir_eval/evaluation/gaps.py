"""Gap analysis: effectiveness per language, the high- vs low-resource gap, and the share of the oracle."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

HIGH, LOW = "high", "low"


@dataclass(frozen=True)
class GapAnalysis:
    """One metric's per-language scores with group means, gap and oracle ratios.

    Attributes:
        metric: the metric analysed.
        systems: row order.
        languages: column order (high group, then low, then ungrouped; each sorted).
        groups: ``{lang: group}`` as given (languages without a group are shown but not averaged).
        scores: ``{system: {lang: mean score}}`` (NaN where a system has no result for a language).
        group_means: ``{system: {"high": mean, "low": mean}}``, unweighted over the group's languages.
        gap: ``{system: high mean - low mean}``.
        oracle: the reference system, or None.
        oracle_lang: the reference language (e.g. ``"en"``, English queries), or None; used when there is
            no oracle system: each system is divided by its own score on that language.
        oracle_ratio: ``{system: {lang or group: system / oracle}}`` (group ratio = ratio of group means);
            empty without an oracle system or language.
    """

    metric: str
    systems: tuple[str, ...]
    languages: tuple[str, ...]
    groups: Mapping[str, str]
    scores: Mapping[str, Mapping[str, float]]
    group_means: Mapping[str, Mapping[str, float]]
    gap: Mapping[str, float]
    oracle: str | None
    oracle_ratio: Mapping[str, Mapping[str, float]]
    oracle_lang: str | None = None

    def to_dataframe(self) -> "pandas.DataFrame":  # noqa: F821
        """Systems as rows; per-language scores, ``mean high``, ``mean low``, ``gap (high - low)`` and,
        with an oracle, ``high / oracle`` and ``low / oracle``."""
        import pandas as pd

        rows = {}
        for system in self.systems:
            row = {lang: self.scores[system].get(lang, np.nan) for lang in self.languages}
            row[f"mean {HIGH}"] = self.group_means[system][HIGH]
            row[f"mean {LOW}"] = self.group_means[system][LOW]
            row["gap (high - low)"] = self.gap[system]
            if self.oracle_ratio:
                row[f"{HIGH} / oracle"] = self.oracle_ratio[system][HIGH]
                row[f"{LOW} / oracle"] = self.oracle_ratio[system][LOW]
            rows[system] = row
        frame = pd.DataFrame.from_dict(rows, orient="index")
        frame.index.name = "system"
        return frame


def gap_analysis(
    scores: Mapping[str, Mapping[str, float]],
    groups: Mapping[str, str],
    *,
    metric: str,
    oracle: str | None = None,
    oracle_lang: str | None = None,
    systems: Sequence[str] | None = None,
) -> GapAnalysis:
    """Compute the high/low-resource gap of each system.

    Args:
        scores: ``{lang: {system: mean score}}`` (one metric).
        groups: ``{lang: "high" | "low" | anything else}``; other groups (e.g. ``"oracle"``) are shown only.
        metric: name, for labels.
        oracle: a system whose score is the per-language reference (e.g. the English-query run).
        oracle_lang: without ``oracle``, a language whose score is each system's own reference
            (e.g. ``"en"``: the share of its English effectiveness a system keeps).
        systems: row order (default: first-seen order over languages).

    ``gap = mean_{l in high} s_l - mean_{l in low} s_l`` (unweighted over languages);
    ``ratio_l = s_l / oracle_l`` (or ``s_l / s_{oracle_lang}``) and ``ratio_group = mean_group(s) / mean_group(oracle)``; NaN when the
    denominator is 0 or a group has no language.
    """
    if systems is None:
        seen: dict[str, None] = {}
        for by_system in scores.values():
            seen.update(dict.fromkeys(by_system))
        systems = tuple(seen)
    systems = tuple(systems)
    if oracle is not None and oracle not in systems:
        raise ValueError(f"oracle {oracle!r} is not among the systems: {', '.join(systems)}")
    if oracle is not None and oracle_lang is not None:
        raise ValueError("give an oracle system or an oracle language, not both")
    if oracle_lang is not None and oracle_lang not in scores:
        raise ValueError(f"oracle language {oracle_lang!r} has no scores; languages: {', '.join(sorted(scores))}")
    order = {HIGH: 0, LOW: 1}
    languages = tuple(sorted(scores, key=lambda lang: (order.get(groups.get(lang, ""), 2), lang)))
    table = {s: {lang: float(scores[lang].get(s, np.nan)) for lang in languages} for s in systems}
    members = {g: [lang for lang in languages if groups.get(lang) == g] for g in (HIGH, LOW)}
    for g, langs in members.items():
        if not langs:
            logger.warning("no language in group %r: its mean and the gap are NaN", g)

    def group_mean(system: str, group: str) -> float:
        values = [table[system][lang] for lang in members[group]]
        if not values or any(np.isnan(values)):
            if values:
                logger.warning("%s lacks a %s-resource language result; its %s mean is NaN", system, group, group)
            return float("nan")
        return float(np.mean(values))

    group_means = {s: {g: group_mean(s, g) for g in (HIGH, LOW)} for s in systems}
    gap = {s: group_means[s][HIGH] - group_means[s][LOW] for s in systems}
    ratio: dict[str, dict[str, float]] = {}
    if oracle is not None:
        for s in systems:
            ratio[s] = {lang: _ratio(table[s][lang], table[oracle][lang]) for lang in languages}
            ratio[s].update({g: _ratio(group_means[s][g], group_means[oracle][g]) for g in (HIGH, LOW)})
    elif oracle_lang is not None:
        for s in systems:
            reference = table[s][oracle_lang]
            ratio[s] = {lang: _ratio(table[s][lang], reference) for lang in languages}
            ratio[s].update({g: _ratio(group_means[s][g], reference) for g in (HIGH, LOW)})
    return GapAnalysis(
        metric=metric,
        systems=systems,
        languages=languages,
        groups=dict(groups),
        scores=table,
        group_means=group_means,
        gap=gap,
        oracle=oracle,
        oracle_ratio=ratio,
        oracle_lang=oracle_lang,
    )


def _ratio(numerator: float, denominator: float) -> float:
    if np.isnan(numerator) or np.isnan(denominator) or denominator == 0:
        return float("nan")
    return numerator / denominator
