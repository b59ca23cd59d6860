"""A leaderboard computed once and rendered many ways (ranx's ``Report`` pattern).

Systems are rows, metrics columns; the best value per metric is bold; a cell carries the letter of each
baseline it differs from significantly after correction (letter = better, letter + ↓ = worse), with a
legend. Renders to Markdown, LaTeX (booktabs), CSV, JSON and an HTML fragment.
"""

from __future__ import annotations

import html
import json
import os
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from clir_eval.evaluation.comparison import Comparison, CompareConfig
from clir_eval.evaluation.evaluate import EvaluationResult
from clir_eval.io import atomic_write

_TEST_NAMES = {"t": "paired t-test", "randomization": "paired randomization test"}
_CORRECTION_NAMES = {"holm": "Holm-corrected", "bonferroni": "Bonferroni-corrected", "none": "uncorrected"}


@dataclass(frozen=True)
class Mark:
    """A significance mark on a cell: ``letter`` of the baseline, ``direction`` +1 better / -1 worse."""

    letter: str
    direction: int

    def text(self) -> str:
        """``"a"`` or ``"a↓"``."""
        return self.letter if self.direction > 0 else f"{self.letter}↓"


@dataclass(frozen=True)
class Leaderboard:
    """Means, best cells and significance marks of one table, ready to render.

    Attributes:
        title: caption (e.g. ``"ntrex / sw"``).
        systems, metrics: row and column order.
        means: ``{system: {metric: mean}}``.
        best: ``{metric: systems holding the best mean}`` (excluded systems never count).
        baselines: ``{baseline: letter}``.
        marks: ``{(system, metric): (Mark, ...)}``, only for significant differences after correction.
        n_queries: ``{system: queries averaged}``.
        significance: the tests' settings (test, correction, alpha, seed, resamples), None without tests.
        family_size: the number of tests corrected together (every pair of this table, or of one metric).
        excluded_from_best: systems never set in bold (oracles).
        judged_queries_only: means over the queries in both run and qrels, not every judged query.
        decimals: digits shown in text formats (JSON and CSV keep full precision).
        undefined: ``((system, baseline, metric, reason), ...)``: tests that could not be computed (no mark;
            the legend says why).

    The legend is written from these settings when a format is rendered (:attr:`legend`).
    """

    title: str
    systems: tuple[str, ...]
    metrics: tuple[str, ...]
    means: Mapping[str, Mapping[str, float]]
    best: Mapping[str, frozenset[str]]
    baselines: Mapping[str, str]
    marks: Mapping[tuple[str, str], tuple[Mark, ...]]
    n_queries: Mapping[str, int]
    significance: CompareConfig | None = None
    family_size: int = 0
    excluded_from_best: tuple[str, ...] = ()
    judged_queries_only: bool = False
    decimals: int = 4
    undefined: tuple[tuple[str, str, str, str], ...] = ()

    @property
    def legend(self) -> tuple[str, ...]:
        """One sentence per mark kind, the test settings, the bold rule and what the means average over."""
        lines = []
        config = self.significance
        if config is not None:
            lines += [f"{letter}: significantly better than {baseline} ({letter}); {letter}↓: significantly worse."
                      for baseline, letter in self.baselines.items()]
            test = _TEST_NAMES[config.test]
            if config.test == "randomization":
                test += f" ({config.n_resamples:,} resamples, seed {config.seed})"
            scope = (f"over the {self.family_size} tests of this table" if config.family == "table"
                     else f"within each metric (over its {self.family_size} tests)")
            lines.append(f"Two-sided {test}, {_CORRECTION_NAMES[config.correction]} {scope}, alpha = {config.alpha:g}.")
            lines += [f"Not tested, no mark: {system} vs {baseline} on {metric}: {reason}."
                      for system, baseline, metric, reason in self.undefined]
        lines.append("Bold: best value in the column" + (
            f" (not counting {', '.join(self.excluded_from_best)})." if self.excluded_from_best else "."))
        counts = sorted(set(self.n_queries.values()))
        mode = "queries in both run and qrels" if self.judged_queries_only else "every judged query; missing = 0"
        lines.append(f"Mean over {'/'.join(map(str, counts))} queries ({mode}).")
        return tuple(lines)

    # ---- data ---------------------------------------------------------------------------------------
    def to_dataframe(self) -> "pandas.DataFrame":  # noqa: F821
        """Numeric means: systems as rows (index ``system``), metrics as columns."""
        import pandas as pd

        frame = pd.DataFrame.from_dict(
            {s: dict(self.means[s]) for s in self.systems}, orient="index", columns=list(self.metrics)
        )
        frame.index.name = "system"
        return frame

    def to_dict(self) -> dict:
        """JSON-ready dict with full-precision means, marks, best cells and legend."""
        return {
            "title": self.title,
            "systems": list(self.systems),
            "metrics": list(self.metrics),
            "means": {s: {m: self.means[s][m] for m in self.metrics} for s in self.systems},
            "n_queries": dict(self.n_queries),
            "best": {m: sorted(self.best[m]) for m in self.metrics},
            "baselines": dict(self.baselines),
            "marks": {
                s: {m: [mark.text() for mark in self.marks.get((s, m), ())] for m in self.metrics}
                for s in self.systems
            },
            "significance": None if self.significance is None else {
                "test": self.significance.test, "correction": self.significance.correction,
                "alpha": self.significance.alpha, "seed": self.significance.seed,
                "n_resamples": self.significance.n_resamples, "family": self.significance.family,
                "family_size": self.family_size,
            },
            "undefined": [dict(zip(("system", "baseline", "metric", "reason"), item)) for item in self.undefined],
            "legend": list(self.legend),
        }

    # ---- renderers ----------------------------------------------------------------------------------
    def _label(self, system: str) -> str:
        letter = self.baselines.get(system)
        return f"{system} ({letter})" if letter else system

    def _cells(self, bold: str, sup: str, escape, mark_text=Mark.text) -> "pandas.DataFrame":  # noqa: F821
        """String cells: ``bold``/``sup`` are ``{}`` templates, names go through ``escape``, marks through
        ``mark_text``."""
        import pandas as pd

        rows = {}
        for system in self.systems:
            row = {}
            for metric in self.metrics:
                value = f"{self.means[system][metric]:.{self.decimals}f}"
                if system in self.best[metric]:
                    value = bold.format(value)
                marks = self.marks.get((system, metric), ())
                if marks:
                    value += sup.format(",".join(mark_text(mark) for mark in marks))
                row[escape(metric)] = value
            rows[escape(self._label(system))] = row
        frame = pd.DataFrame.from_dict(rows, orient="index")
        frame.index.name = escape("system")
        return frame

    def to_markdown(self) -> str:
        """GitHub Markdown: ``**best**``, marks as ``<sup>a</sup>``, title above and legend below."""
        frame = self._cells("**{}**", "<sup>{}</sup>", _escape_markdown, lambda mark: html.escape(mark.text()))
        table = frame.to_markdown(colalign=["left"] + ["right"] * len(self.metrics))
        parts = [f"**{_escape_markdown(self.title)}**\n"] if self.title else []
        parts.append(table)
        if self.legend:
            parts.append("\n" + "\n".join(f"- {_escape_markdown(line)}" for line in self.legend))
        return "\n".join(parts) + "\n"

    def to_latex(self) -> str:
        """A booktabs ``table`` with ``\\textbf`` for the best value and ``$^{a}$`` marks."""
        frame = self._cells(r"\textbf{{{}}}", r"$^{{{}}}$", _escape_latex, _latex_mark)
        body = frame.reset_index().to_latex(escape=False, index=False, column_format="l" + "r" * len(self.metrics))
        caption = _escape_latex(self.title)
        legend = " ".join(_escape_latex(line).replace("↓", r"$\downarrow$") for line in self.legend)
        if legend:
            caption = f"{caption}. {legend}" if caption else legend
        return (
            "% needs \\usepackage{booktabs}\n\\begin{table}[t]\n\\centering\n"
            + body
            + (f"\\caption{{{caption}}}\n" if caption else "")
            + "\\end{table}\n"
        )

    def to_csv(self) -> str:
        """Full-precision means plus a ``<metric> marks`` column per metric (e.g. ``"a;b↓"``)."""
        frame = self.to_dataframe()
        for metric in self.metrics:
            frame[f"{metric} marks"] = [
                ";".join(mark.text() for mark in self.marks.get((s, metric), ())) for s in self.systems
            ]
        frame.insert(0, "baseline", [self.baselines.get(s, "") for s in self.systems])
        # repr: the shortest text that reads back as the same double.
        return frame.to_csv(lineterminator="\n", float_format=lambda x: repr(float(x)))

    def to_json(self) -> str:
        """:meth:`to_dict` as indented JSON (floats at full precision)."""
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"

    def to_html(self) -> str:
        """An HTML fragment: ``<table>`` with ``<strong>`` best cells, ``<sup>`` marks, legend list."""
        frame = self._cells("<strong>{}</strong>", "<sup>{}</sup>", html.escape, lambda mark: html.escape(mark.text()))
        table = frame.reset_index().to_html(escape=False, index=False, border=0, classes="leaderboard")
        legend = "".join(f"<li>{html.escape(line)}</li>" for line in self.legend)
        return table + (f'<ul class="legend">{legend}</ul>' if legend else "")

    def to_html_page(self) -> str:
        """A standalone HTML document holding :meth:`to_html` under the title."""
        title = html.escape(self.title or "Leaderboard")
        return (
            f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
            f"<style>{_PAGE_CSS}</style></head><body><h1>{title}</h1>{self.to_html()}</body></html>\n"
        )

    def save(self, directory: str | os.PathLike, stem: str = "leaderboard") -> list[Path]:
        """Write ``stem.{md,tex,csv,json,html}`` into ``directory`` (atomically); returns the paths."""
        directory = Path(directory)
        written = []
        for suffix, text in (
            ("md", self.to_markdown()),
            ("tex", self.to_latex()),
            ("csv", self.to_csv()),
            ("json", self.to_json()),
            ("html", self.to_html_page()),
        ):
            path = directory / f"{stem}.{suffix}"
            with atomic_write(path) as handle:
                handle.write(text)
            written.append(path)
        return written


def build_leaderboard(
    result: EvaluationResult,
    comparison: Comparison | None = None,
    *,
    title: str = "",
    systems: Sequence[str] | None = None,
    exclude_from_best: Sequence[str] = (),
    decimals: int = 4,
) -> Leaderboard:
    """Assemble a :class:`Leaderboard` from evaluation means and (optionally) significance tests.

    Args:
        systems: row order (default: the evaluation's run order).
        exclude_from_best: systems never set in bold (e.g. an oracle upper bound).
    """
    systems = tuple(systems) if systems is not None else result.runs
    unknown = [s for s in systems if s not in result.means]
    if unknown:
        raise ValueError(f"systems {unknown} not among the runs: {', '.join(result.runs)}")
    metrics = result.metrics
    contenders = [s for s in systems if s not in set(exclude_from_best)]
    best = {}
    for metric in metrics:
        top = max((result.means[s][metric] for s in contenders), default=None)
        best[metric] = frozenset(s for s in contenders if result.means[s][metric] == top)

    baselines: dict[str, str] = {}
    marks: dict[tuple[str, str], list[Mark]] = {}
    undefined: list[tuple[str, str, str, str]] = []
    if comparison is not None:
        if len(comparison.config.baselines) > len(string.ascii_lowercase):
            raise ValueError("at most 26 baselines can be lettered")
        baselines = {b: string.ascii_lowercase[i] for i, b in enumerate(comparison.config.baselines)}
        undefined = [(p.system, p.baseline, p.metric, p.undefined) for p in comparison.pairs
                     if p.undefined and p.system in systems]
        for pair in comparison.pairs:
            if not pair.significant or pair.system not in systems:
                continue
            marks.setdefault((pair.system, pair.metric), []).append(Mark(baselines[pair.baseline], pair.direction))
    return Leaderboard(
        title=title,
        systems=systems,
        metrics=metrics,
        means={s: dict(result.means[s]) for s in systems},
        best=best,
        baselines=baselines,
        marks={key: tuple(sorted(value, key=lambda mark: mark.letter)) for key, value in marks.items()},
        n_queries={s: result.num_queries[s] for s in systems},
        significance=None if comparison is None else comparison.config,
        family_size=0 if comparison is None else comparison.family_size,
        excluded_from_best=tuple(exclude_from_best),
        judged_queries_only=result.judged_queries_only,
        decimals=decimals,
        undefined=tuple(undefined),
    )


_PAGE_CSS = (
    "body{font-family:system-ui,sans-serif;margin:2rem;color:#222}h1{font-size:1.3rem}"
    "table{border-collapse:collapse;font-size:.9rem}th,td{padding:.25rem .7rem;border-bottom:1px solid #e3e3e3;"
    "text-align:right}th:first-child,td:first-child{text-align:left}thead th{border-bottom:2px solid #999}"
    "sup{color:#1a5fb4;font-weight:600}ul.legend{font-size:.82rem;color:#555}"
)


def _latex_mark(mark: Mark) -> str:
    return mark.letter if mark.direction > 0 else mark.letter + r"{\downarrow}"


# Markdown's inline markup, backslash-escaped; HTML's (GitHub renders raw HTML in Markdown) as entities, so a
# name such as "<script>" is shown as text, never run or rendered.
_MARKDOWN_SPECIAL = {**{ch: "\\" + ch for ch in "\\`*_[]|~"}, "<": "&lt;", ">": "&gt;", "&": "&amp;"}


def _one_line(text: str) -> str:
    """``text`` with line breaks and other control characters as spaces: a name must stay in its cell."""
    return "".join(" " if not ch.isprintable() else ch for ch in text)


def _escape_markdown(text: str) -> str:
    return "".join(_MARKDOWN_SPECIAL.get(ch, ch) for ch in _one_line(text))


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _escape_latex(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in _one_line(text))
