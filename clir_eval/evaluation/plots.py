"""Figures: per-language bars with bootstrap CIs, sorted per-query differences, and the resource gap.

Each ``*_figure`` function builds a ``matplotlib.figure.Figure`` on an explicit Agg canvas, inside the
function: no pyplot, so no global backend or state is touched at import or afterwards.
:func:`save_figure` writes PNG and PDF atomically; :func:`figure_png` gives PNG bytes for HTML.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from clir_eval.evaluation.gaps import HIGH, LOW, GapAnalysis
from clir_eval.evaluation.significance import DEFAULT_RESAMPLES, bootstrap_ci, bootstrap_cis, win_tie_loss
from clir_eval.io import atomic_write

_DPI = 150


def _figure(width: float, height: float) -> "matplotlib.figure.Figure":  # noqa: F821
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)  # Agg, set here and only for this figure
    return figure


def _colours(systems: Sequence[str]) -> dict[str, tuple]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {s: cmap(i % 10) for i, s in enumerate(systems)}


def per_language_figure(
    per_query: Mapping[str, Mapping[str, np.ndarray]],
    *,
    metric: str,
    seed: int = 42,
    level: float = 0.95,
    n_resamples: int = DEFAULT_RESAMPLES,
    systems: Sequence[str] | None = None,
    groups: Mapping[str, str] | None = None,
) -> "matplotlib.figure.Figure":  # noqa: F821
    """Grouped bars: one group per language, one bar per system (mean), whiskers = bootstrap CI.

    Args:
        per_query: ``{lang: {system: per-query scores}}`` (NaN entries are dropped).
        groups: optional ``{lang: group}``; shown under the language name.
    """
    languages = list(per_query)
    if systems is None:
        systems = list(dict.fromkeys(s for by_system in per_query.values() for s in by_system))
    colours = _colours(systems)
    width = 0.8 / max(1, len(systems))
    # Capped width: wider figures are scaled down in the HTML and their text becomes unreadable.
    figure = _figure(min(11.0, max(6.0, 1.2 + 0.3 * len(languages) * len(systems))), 4.2)
    axes = figure.add_subplot()
    x = np.arange(len(languages))
    intervals = {}  # (system, lang) -> (mean, ci); one batched bootstrap per language
    for lang in languages:
        present = [s for s in systems if s in per_query[lang]]
        columns = [np.asarray(per_query[lang][s], dtype=float) for s in present]
        columns = [values[~np.isnan(values)] for values in columns]
        sizes = {values.size for values in columns}
        if len(sizes) == 1 and 0 not in sizes:
            cis = bootstrap_cis(np.stack(columns, axis=1), seed=seed, level=level, n_resamples=n_resamples)
        else:  # different queries per system (judged_queries_only): one bootstrap each
            cis = [bootstrap_ci(v, seed=seed, level=level, n_resamples=n_resamples) if v.size else None
                   for v in columns]
        for system, values, ci in zip(present, columns, cis):
            if ci is not None:
                intervals[system, lang] = (float(values.mean()), ci)
    for i, system in enumerate(systems):
        means, low, high = [], [], []
        for lang in languages:
            if (system, lang) not in intervals:
                means.append(np.nan), low.append(0.0), high.append(0.0)
                continue
            mean, ci = intervals[system, lang]
            means.append(mean), low.append(mean - ci.low), high.append(ci.high - mean)
        axes.bar(x + (i - (len(systems) - 1) / 2) * width, means, width, yerr=[low, high], capsize=2,
                 label=system, color=colours[system], error_kw={"elinewidth": 0.8})
    labels = [f"{lang}\n({groups[lang]})" if groups and lang in groups else lang for lang in languages]
    axes.set_xticks(x, labels)
    axes.set_ylabel(metric)
    axes.set_title(f"{metric} per language (bars: mean; whiskers: {level:.0%} bootstrap CI)", fontsize=10)
    axes.grid(axis="y", alpha=0.3)
    axes.set_axisbelow(True)
    axes.legend(fontsize=8, ncols=min(len(systems), 4), loc="upper center", bbox_to_anchor=(0.5, -0.18),
                frameon=False)
    return figure


def difference_figure(
    baseline_scores: np.ndarray,
    system_scores: np.ndarray,
    *,
    metric: str,
    system: str,
    baseline: str,
) -> "matplotlib.figure.Figure":  # noqa: F821
    """Per-query ``system - baseline`` on ``metric``, sorted, as bars (wins green, losses red)."""
    control = np.asarray(baseline_scores, dtype=float)
    treatment = np.asarray(system_scores, dtype=float)
    keep = ~(np.isnan(control) | np.isnan(treatment))
    control, treatment = control[keep], treatment[keep]
    diff = np.sort(treatment - control)[::-1]
    wtl = win_tie_loss(control, treatment)
    figure = _figure(6.4, 3.0)
    axes = figure.add_subplot()
    # Two filled step outlines instead of one bar per query: one polygon each, fast for thousands of queries.
    edges = np.arange(diff.size + 1)
    axes.stairs(np.where(diff > 0, diff, 0.0), edges, fill=True, color="#2a9d4b", linewidth=0)
    axes.stairs(np.where(diff < 0, diff, 0.0), edges, fill=True, color="#c0392b", linewidth=0)
    axes.axhline(0, color="black", linewidth=0.8)
    axes.set_xlim(0, max(1, diff.size))
    axes.set_xlabel("queries, sorted by difference")
    axes.set_ylabel(f"Δ {metric}")
    axes.set_title(
        f"{system} − {baseline}: {wtl.wins} better, {wtl.ties} equal, {wtl.losses} worse "
        f"(mean Δ {diff.mean():+.4f})", fontsize=9,
    )
    axes.grid(axis="y", alpha=0.3)
    axes.set_axisbelow(True)
    return figure


def gap_figure(gap: GapAnalysis) -> "matplotlib.figure.Figure":  # noqa: F821
    """Per system: mean over high- and low-resource languages side by side, the gap written above."""
    systems = list(gap.systems)
    figure = _figure(max(6.4, 1.0 + 1.1 * len(systems)), 3.6)
    axes = figure.add_subplot()
    x = np.arange(len(systems))
    high = [gap.group_means[s][HIGH] for s in systems]
    low = [gap.group_means[s][LOW] for s in systems]
    axes.bar(x - 0.2, high, 0.4, label="high-resource languages", color="#4c72b0")
    axes.bar(x + 0.2, low, 0.4, label="low-resource languages", color="#dd8452")
    for xi, h, lo, s in zip(x, high, low, systems):
        if not (np.isnan(h) or np.isnan(lo)):
            axes.annotate(f"gap {gap.gap[s]:+.3f}", (xi, max(h, lo)), xytext=(0, 3), textcoords="offset points",
                          ha="center", fontsize=8)
    crowded = len(systems) > 6
    axes.set_xticks(x, systems, rotation=25 if crowded else 0, ha="right" if crowded else "center",
                    rotation_mode="anchor")
    axes.set_ylabel(gap.metric)
    top = np.nanmax(high + low) if not np.all(np.isnan(high + low)) else 1.0
    axes.set_ylim(0, top * 1.15 if top > 0 else 1.0)
    axes.set_title(f"{gap.metric}: mean over high- vs low-resource languages", fontsize=10)
    axes.legend(fontsize=8, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.12 if not crowded else -0.25),
                ncols=2)
    axes.grid(axis="y", alpha=0.3)
    axes.set_axisbelow(True)
    return figure


def trend_figure(analysis: "TrendAnalysis") -> "matplotlib.figure.Figure":  # noqa: F821
    """Gain against the start's score, per language: left, each method's gain over the start; right, each
    contrast (e.g. OT − KD) with its least-squares line. Whiskers: the per-language bootstrap CI."""
    gains = [e for e in analysis.effects if e.control == analysis.start]
    contrasts = [e for e in analysis.effects if e.control != analysis.start]
    panels = [(gains, f"gain over {analysis.start}")] if gains else []
    panels += [(contrasts, "contrast")] if contrasts else []
    figure = _figure(5.2 * len(panels), 4.2)
    colours = _colours([e.name for e in analysis.effects])
    x = np.array([analysis.row(lang, analysis.effects[0].name).start_mean for lang in analysis.languages])
    span = np.array([x.min(), x.max()])
    for index, (effects, label) in enumerate(panels):
        axes = figure.add_subplot(1, len(panels), index + 1)
        for effect in effects:
            rows = [analysis.row(lang, effect.name) for lang in analysis.languages]
            y = np.array([r.difference for r in rows])
            low = np.array([r.difference - r.ci_low for r in rows])
            high = np.array([r.ci_high - r.difference for r in rows])
            axes.errorbar(x, y, yerr=[low, high], fmt="o", capsize=2, color=colours[effect.name],
                          label=effect.name, markersize=4, elinewidth=0.8)
            fit = analysis.fit(effect.name)
            if effect in contrasts and not fit.undefined:
                axes.plot(span, fit.intercept + fit.slope * span, color=colours[effect.name], linewidth=1,
                          label=f"slope {fit.slope:+.3f} [{fit.ci_low:+.3f}, {fit.ci_high:+.3f}], p {fit.p_value:.2g}")
            if effect is effects[0]:
                for xi, yi, lang in zip(x, y, analysis.languages):
                    axes.annotate(lang, (xi, yi), xytext=(3, 3), textcoords="offset points", fontsize=7)
        axes.axhline(0, color="black", linewidth=0.8)
        axes.set_xlabel(f"start {analysis.metric} ({analysis.start})")
        axes.set_ylabel(f"Δ {analysis.metric}")
        axes.set_title(f"{label} per language ({analysis.config.ci_level:.0%} CI)", fontsize=10)
        axes.grid(alpha=0.3)
        axes.set_axisbelow(True)
        axes.legend(fontsize=7, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncols=1)
    return figure


def save_figure(figure: "matplotlib.figure.Figure", stem: str | os.PathLike) -> list[Path]:  # noqa: F821
    """Write ``stem.png`` and ``stem.pdf`` atomically; returns the two paths."""
    stem = Path(stem)
    paths = []
    for fmt in ("png", "pdf"):
        path = stem.with_name(f"{stem.name}.{fmt}")
        with atomic_write(path, mode="wb") as handle:
            # Fixed metadata so the same figure gives the same bytes (no creation date).
            figure.savefig(handle, format=fmt, dpi=_DPI, metadata={"CreationDate": None} if fmt == "pdf" else {"Software": None})
        paths.append(path)
    return paths


def figure_png(figure: "matplotlib.figure.Figure") -> bytes:  # noqa: F821
    """PNG bytes of ``figure`` (for embedding in HTML)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI, metadata={"Software": None})
    return buffer.getvalue()
