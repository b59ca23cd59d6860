"""Sweep analysis: one table of every student's effectiveness by axis value, and the research-question plots.

- effectiveness vs each swept axis (e.g. bitext size), one line per value of another axis (e.g. method);
- the high- vs low-resource gap vs each axis (does the gap shrink with student size / bitext?);
- the gain of OT over KD per backbone, when the sweep has both a ``method`` and a ``backbone`` axis.

Input is the long table the runner builds from evaluation means; nothing here re-evaluates runs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from clir_eval.experiment.config import StudentSpec, SweepSpec, get_nested
from clir_eval.io import atomic_write

logger = logging.getLogger(__name__)

#: Columns of the long results table: one row per (system, collection, lang, metric).
RESULT_COLUMNS = ("system", "collection", "lang", "group", "metric", "value")


def student_axes(students: Sequence[StudentSpec], sweep: SweepSpec) -> pd.DataFrame:
    """One row per student: its name (``system``) and its value on every axis of the sweep."""
    rows = []
    for student in students:
        row = {"system": student.name}
        for axis in sweep.axes:
            if axis.startswith("options."):
                value = get_nested(student.options, axis.split(".")[1:])
            else:
                value = getattr(student, axis)
            row[axis] = "+".join(value) if isinstance(value, tuple) else value
        rows.append(row)
    return pd.DataFrame(rows)


def sweep_table(results: pd.DataFrame, axes: pd.DataFrame) -> pd.DataFrame:
    """Mean per (student, collection, metric, group) joined with the student's axis values.

    ``group`` is ``all`` (every query language), and each language group present (``high``, ``low``);
    ``gap`` = high − low where both exist.
    """
    missing = set(RESULT_COLUMNS) - set(results.columns)
    if missing:
        raise ValueError(f"results table lacks columns {sorted(missing)}")
    students = results[results["system"].isin(axes["system"])]
    if students.empty:
        raise ValueError("no result belongs to a sweep student")
    keys = ["system", "collection", "metric"]
    overall = students.groupby(keys, as_index=False)["value"].mean().assign(group="all")
    by_group = students.groupby(keys + ["group"], as_index=False)["value"].mean()
    table = pd.concat([overall, by_group], ignore_index=True)
    wide = table.pivot_table(index=keys, columns="group", values="value").reset_index()
    wide.columns.name = None
    if {"high", "low"} <= set(wide.columns):
        wide["gap"] = wide["high"] - wide["low"]
    merged = axes.merge(wide, on="system", how="right")
    # Students in the sweep's own order, so plots show axis values as the config lists them (e.g. by size).
    position = {name: i for i, name in enumerate(axes["system"])}
    return merged.sort_values("system", key=lambda names: names.map(position), kind="stable", ignore_index=True)


def _line_plot(table: pd.DataFrame, x: str, y: str, hue: str | None, title: str, ylabel: str,
               zero_line: bool = False):
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib import pyplot as plt

    figure, axis = plt.subplots(figsize=(5.5, 3.6), dpi=120)
    groups = table.groupby(hue, sort=True) if hue else [("", table)]
    numeric = pd.api.types.is_numeric_dtype(table[x])
    categories = list(dict.fromkeys(table[x].astype(str)))  # first-appearance order: the config's
    for label, part in groups:
        part = part.sort_values(x)
        xs = part[x] if numeric else [categories.index(str(v)) for v in part[x]]
        axis.plot(xs, part[y], marker="o", label=str(label) if hue else None)
    if not numeric:
        axis.set_xticks(range(len(categories)), categories, rotation=20, ha="right")
    elif table[x].max() / max(table[x].min(), 1e-12) >= 8:
        axis.set_xscale("log")
    if zero_line:
        axis.axhline(0.0, color="grey", linewidth=0.8)
    axis.set_xlabel(x)
    axis.set_ylabel(ylabel)
    axis.set_title(title, fontsize=10)
    axis.grid(alpha=0.3)
    if hue:
        axis.legend(title=hue, fontsize=8)
    figure.tight_layout()
    return figure


def _save(figure, stem: Path) -> list[Path]:
    from matplotlib import pyplot as plt

    paths = []
    for suffix in (".png", ".pdf"):
        path = stem.with_suffix(suffix)
        with atomic_write(path, mode="wb") as handle:
            figure.savefig(handle, format=suffix[1:], bbox_inches="tight")
        paths.append(path)
    plt.close(figure)
    return paths


def write_sweep_analysis(table: pd.DataFrame, axes: Sequence[str], metric: str, out_dir: Path) -> list[Path]:
    """Write ``sweep.csv`` and the plots for ``metric`` under ``out_dir``; returns the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / "sweep.csv"]
    with atomic_write(written[0]) as handle:
        table.to_csv(handle, index=False, float_format="%.6g")
    rows = table[table["metric"] == metric]
    if rows.empty:
        raise ValueError(f"metric {metric!r} is not in the sweep table; metrics: {sorted(table['metric'].unique())}")
    for collection, part in rows.groupby("collection"):
        for x in axes:
            others = [a for a in axes if a != x and part[a].nunique() > 1]
            hue = others[0] if others else None
            if part[x].nunique() < 2:
                continue
            key = [x] + ([hue] if hue else [])
            summary = part.groupby(key, as_index=False, sort=False)[
                [c for c in ("all", "low", "high", "gap") if c in part]].mean()
            safe = x.replace(".", "_")
            written += _save(_line_plot(summary, x, "all", hue, f"{collection}: {metric} vs {x}", metric),
                             out_dir / f"{collection}-{metric}-vs-{safe}")
            if "gap" in summary and summary["gap"].notna().any():
                written += _save(_line_plot(summary.dropna(subset=["gap"]), x, "gap", hue,
                                            f"{collection}: high − low resource gap vs {x}", f"{metric} gap"),
                                 out_dir / f"{collection}-gap-vs-{safe}")
        if {"method", "backbone"} <= set(axes):
            gain = part.pivot_table(index="backbone", columns="method", values="all")
            if {"ot", "kd"} <= set(gain.columns):
                gain = gain.reindex(list(dict.fromkeys(part["backbone"])))
                frame = (gain["ot"] - gain["kd"]).rename("ot_gain").reset_index()
                written += _save(_line_plot(frame, "backbone", "ot_gain", None,
                                            f"{collection}: OT − KD ({metric}) per backbone", f"Δ {metric}",
                                            zero_line=True),
                                 out_dir / f"{collection}-ot-gain-by-backbone")
    logger.info("sweep analysis: %d files in %s", len(written), out_dir)
    return written
