"""The results report: computed once (:func:`build_report`), rendered to one self-contained HTML page.

The page holds a leaderboard per collection x language, per-language bars with bootstrap CIs, sorted
per-query differences against the first baseline, the high/low-resource gap analysis, and the provenance
of every run (command, model and data hashes from ``manifest.json``, plus the run file's own SHA-256).
Figures are embedded as base64 PNG so the file can be mailed or archived alone.
"""

from __future__ import annotations

import base64
import html
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from clir_eval.evaluation.comparison import Comparison, CompareConfig, compare_systems
from clir_eval.evaluation.evaluate import (
    DEFAULT_TREC_EVAL_VERSION,
    EvaluationResult,
    evaluate_runs,
    qrels_from_records,
)
from clir_eval.evaluation.gaps import GapAnalysis, gap_analysis
from clir_eval.evaluation.leaderboard import Leaderboard, build_leaderboard
from clir_eval.evaluation.manifest import ResultsManifest, RunEntry
from clir_eval.evaluation.plots import save_figure
from clir_eval.io import atomic_write, inside, safe_filename, sha256_file, staged_outputs, write_csv

logger = logging.getLogger(__name__)

DEFAULT_METRICS = ("ndcg@10", "mrr", "recall@100")


@dataclass(frozen=True)
class TableResult:
    """One collection x language: the evaluation, the tests and the leaderboard."""

    collection: str
    lang: str
    runs: tuple[RunEntry, ...]
    result: EvaluationResult
    comparison: Comparison | None
    leaderboard: Leaderboard

    @property
    def anchor(self) -> str:
        return _anchor(f"{self.collection}-{self.lang}")


@dataclass(frozen=True)
class Report:
    """Everything the HTML page shows, computed once."""

    results: ResultsManifest
    metrics: tuple[str, ...]
    tables: tuple[TableResult, ...]
    gaps: Mapping[str, GapAnalysis]
    language_groups: Mapping[str, Mapping[str, str]]
    compare_config: CompareConfig | None
    run_sha256: Mapping[Path, str] = field(default_factory=dict)
    seed: int = 42


def build_report(
    results: ResultsManifest,
    *,
    metrics: Sequence[str] | None = None,
    baselines: Sequence[str] | None = None,
    test: str | None = None,
    correction: str | None = None,
    alpha: float | None = None,
    seed: int | None = None,
    n_resamples: int | None = None,
    family: str | None = None,
    oracle: str | None = None,
    language_groups: Mapping[str, str] | None = None,
    judged_queries_only: bool = False,
    trec_eval_version: int | None = None,
) -> Report:
    """Evaluate and compare every run of ``results``; arguments override the manifest's settings.

    Language groups come from ``language_groups``, else the manifest, else the built-in collection of the
    same name (its ``groups``), else none (no gap analysis for that collection). ``trec_eval_version``: 9
    compares scores at float32 precision (trec_eval 9.x, pytrec_eval), 10 as doubles (trec_eval 10.0); None
    takes the manifest's (a study's ``evaluation.trec_eval``), else 9.
    """
    from clir_eval.collections.readers import read_qrels
    from clir_eval.retrieval.runs import read_run

    sig = dict(results.significance)
    metrics = tuple(metrics or results.metrics or DEFAULT_METRICS)
    baselines = tuple(baselines or results.baselines)
    oracle = oracle or results.oracle
    seed = int(seed if seed is not None else sig.get("seed", 42))
    if trec_eval_version is None:
        trec_eval_version = int(sig.get("trec_eval", DEFAULT_TREC_EVAL_VERSION))
    settings = dict(
        test=test or sig.get("test", "t"),
        correction=correction or sig.get("correction", "holm"),
        alpha=float(alpha if alpha is not None else sig.get("alpha", 0.05)),
        seed=seed,
        n_resamples=int(n_resamples or sig.get("n_resamples", 10_000)),
        family=family or sig.get("family", "table"),
    )
    config = CompareConfig(baselines=baselines, **settings) if baselines else None

    by_table: dict[tuple[str, str], list[RunEntry]] = {}
    for entry in results.runs:
        by_table.setdefault((entry.collection, entry.lang), []).append(entry)
    qrels_cache: dict[Path, dict[str, dict[str, int]]] = {}
    tables = []
    for (collection, lang), entries in sorted(by_table.items()):
        qrels_paths = {e.qrels for e in entries}
        if len(qrels_paths) != 1:
            raise ValueError(f"{collection}/{lang}: runs use different qrels files {sorted(map(str, qrels_paths))}")
        qrels_path = qrels_paths.pop()
        if qrels_path not in qrels_cache:
            qrels_cache[qrels_path] = qrels_from_records(read_qrels(qrels_path))
        names = [e.system for e in entries]
        if len(set(names)) != len(names):
            raise ValueError(f"{collection}/{lang}: two runs are both called {_first_repeat(names)!r}")
        runs = {e.system: read_run(e.path) for e in entries}
        result = evaluate_runs(qrels_cache[qrels_path], runs, metrics, judged_queries_only=judged_queries_only,
                               trec_eval_version=trec_eval_version)
        present = tuple(b for b in baselines if b in runs)
        comparison = None
        if config is not None and present:
            comparison = compare_systems(result, CompareConfig(baselines=present, **settings))
        not_best = [s for s in dict.fromkeys([*results.upper_bounds, oracle]) if s in runs]
        leaderboard = build_leaderboard(result, comparison, title=f"{collection} / {lang}", exclude_from_best=not_best)
        tables.append(TableResult(collection, lang, tuple(entries), result, comparison, leaderboard))
        logger.info("%s/%s: %d runs, %d queries", collection, lang, len(runs), len(result.qids))

    groups_by_collection: dict[str, dict[str, str]] = {}
    gaps: dict[str, GapAnalysis] = {}
    for collection in dict.fromkeys(t.collection for t in tables):
        groups = dict(language_groups or results.language_groups or _builtin_groups(collection))
        groups_by_collection[collection] = groups
        mine = [t for t in tables if t.collection == collection]
        grouped = {groups.get(t.lang) for t in mine}
        if not {"high", "low"} <= grouped:
            logger.info("%s: no gap analysis (needs languages in both the high and low groups)", collection)
            continue
        primary = metrics[0]
        scores = {t.lang: {s: t.result.means[s][primary] for s in t.result.runs} for t in mine}
        has_oracle = oracle is not None and all(oracle in s for s in scores.values())
        oracle_langs = [lang for lang in scores if groups.get(lang) == "oracle"]
        gaps[collection] = gap_analysis(
            scores, groups, metric=primary, oracle=oracle if has_oracle else None,
            oracle_lang=oracle_langs[0] if not has_oracle and len(oracle_langs) == 1 else None,
        )
    return Report(
        results=results,
        metrics=metrics,
        tables=tuple(tables),
        gaps=gaps,
        language_groups=groups_by_collection,
        compare_config=config,
        run_sha256={e.path: sha256_file(e.path) for e in results.runs},
        seed=seed,
    )


def render_html(report: Report, *, n_resamples_plot: int = 2_000, figure_dir: str | os.PathLike | None = None) -> str:
    """The report as one self-contained HTML document (figures embedded as base64 PNG).

    Args:
        n_resamples_plot: bootstrap resamples of the CIs drawn in the per-language bars.
        figure_dir: also save every figure there as PNG and PDF
            (``<collection>/per_language``, ``<collection>/<lang>/diff_<system>_vs_<baseline>``,
            ``<collection>/gap``).
    """
    from clir_eval.evaluation.plots import difference_figure, figure_png, gap_figure, per_language_figure

    def embed(figure, alt: str, *name: str, wide: bool = False) -> str:
        if figure_dir is not None:
            save_figure(figure, inside(figure_dir, Path(figure_dir, *name)))
        return _img(figure_png(figure), alt, wide=wide)

    results = report.results
    primary = report.metrics[0]
    out: list[str] = []
    w = out.append
    w(f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{_e(results.title)}</title>")
    w(f"<style>{_CSS}</style></head><body><main>")
    w(f"<h1>{_e(results.title)}</h1>")
    facts = [("Results", str(results.root)), ("Created", results.created), ("Git commit", results.git_commit),
             ("Metrics", ", ".join(report.metrics)), ("Primary metric (figures, gaps)", primary)]
    if report.compare_config is not None:
        c = report.compare_config
        facts.append(("Baselines", ", ".join(f"{b} ({chr(97 + i)})" for i, b in enumerate(c.baselines))))
        facts.append(("Significance", f"{c.test} test, {c.correction} correction per {c.family}, alpha {c.alpha:g}, "
                                      f"seed {c.seed}"))
    else:
        facts.append(("Significance", "not tested (no baseline given)"))
    if not results.from_manifest:
        facts.append(("Provenance", "no manifest.json: runs found by directory layout, commands unknown"))
    w("<dl class=\"facts\">" + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in facts if v) + "</dl>")
    if results.command:
        w(f"<p>Produced by:</p><pre>{_e(results.command)}</pre>")

    collections = list(dict.fromkeys(t.collection for t in report.tables))
    w("<nav><h2>Contents</h2><ol>")
    w('<li><a href="#legend">How to read the tables</a></li>')
    for collection in collections:
        w(f'<li><a href="#{_anchor(collection)}">{_e(collection)}</a><ol>')
        for t in _tables_of(report, collection):
            w(f'<li><a href="#{t.anchor}">{_e(t.lang)}</a></li>')
        if collection in report.gaps:
            w(f'<li><a href="#{_anchor(collection)}-gap">resource gap</a></li>')
        w("</ol></li>")
    w('<li><a href="#provenance">Provenance of every run</a></li></ol></nav>')

    w('<section id="legend"><h2>How to read the tables</h2><ul>')
    judged_only = any(t.result.judged_queries_only for t in report.tables)
    averaging = ("means over the queries a run answers that have judgements, as plain <code>trec_eval</code>"
                 if judged_only else
                 "means over every judged query, a query a run does not answer counts as 0, as "
                 "<code>trec_eval -c</code>")
    w(f"<li>Rows are systems, columns metrics (trec_eval definitions; {averaging}).</li>")
    w("<li><strong>Bold</strong>: best value in the column (oracles and other upper bounds are not counted).</li>")
    if report.compare_config is not None:
        for i, b in enumerate(report.compare_config.baselines):
            letter = chr(97 + i)
            w(f"<li><sup>{letter}</sup>: significantly better than <em>{_e(b)}</em> (marked ({letter}) in its row); "
              f"<sup>{letter}↓</sup>: significantly worse.</li>")
        scope = ("all tests of one table" if report.compare_config.family == "table"
                 else "the tests of one metric in one table")
        w(f"<li>Significance is two-sided, corrected over {scope}; each table's legend gives "
          "the test and family size.</li>")
    w("</ul></section>")

    for collection in collections:
        w(f'<section id="{_anchor(collection)}"><h2>{_e(collection)}</h2>')
        groups = report.language_groups.get(collection, {})
        mine = _tables_of(report, collection)
        if len(mine) > 1:
            per_query = {t.lang: {s: t.result.per_query[s][primary] for s in t.result.runs} for t in mine}
            figure = per_language_figure(per_query, metric=primary, seed=report.seed, groups=groups,
                                         n_resamples=n_resamples_plot)
            w(embed(figure, f"{primary} per language in {collection}", safe_filename(collection), "per_language",
                    wide=True))
        for t in mine:
            w(f'<section id="{t.anchor}"><h3>{_e(collection)} / {_e(t.lang)}'
              f'{_group_label(groups.get(t.lang))}</h3>')
            w(t.leaderboard.to_html())
            if t.comparison is not None and t.comparison.pairs:
                w(_comparison_details(t.comparison, primary))
                baseline = t.comparison.config.baselines[0]
                others = [s for s in t.result.runs if s != baseline and s != report.results.oracle]
                if others:
                    w(f"<details><summary>Per-query differences on {_e(primary)} against {_e(baseline)} "
                      f"({len(others)} figures)</summary><div class=\"figs\">")
                    for system in others:
                        figure = difference_figure(t.result.per_query[baseline][primary],
                                                   t.result.per_query[system][primary],
                                                   metric=primary, system=system, baseline=baseline)
                        w(embed(figure, f"{system} minus {baseline} per query", safe_filename(collection),
                                safe_filename(t.lang), f"diff_{safe_filename(system)}_vs_{safe_filename(baseline)}"))
                    w("</div></details>")
            w(_provenance_details(t.runs, report.run_sha256))
            w("</section>")
        if collection in report.gaps:
            gap = report.gaps[collection]
            w(f'<section id="{_anchor(collection)}-gap"><h3>{_e(collection)}: high- vs low-resource gap ({_e(gap.metric)})</h3>')
            if gap.oracle:
                ratio_note = f"; <em>x / oracle</em> = group mean of the system divided by that of {_e(gap.oracle)}"
            elif gap.oracle_lang:
                ratio_note = (f"; <em>x / oracle</em> = group mean of the system divided by its own score with "
                              f"{_e(gap.oracle_lang)} queries")
            else:
                ratio_note = ""
            w(f"<p>Unweighted mean over the languages of each group; gap = high − low{ratio_note}.</p>")
            frame = gap.to_dataframe().reset_index()
            w(frame.to_html(index=False, border=0, classes="leaderboard", float_format=lambda x: f"{x:.4f}", na_rep="–"))
            w(embed(gap_figure(gap), f"resource gap in {collection}", safe_filename(collection), "gap"))
            w("</section>")
        w("</section>")

    w('<section id="provenance"><h2>Provenance of every run</h2>')
    w(_provenance_table(report.results.runs, report.run_sha256))
    w("</section></main></body></html>\n")
    return "\n".join(out)


def write_report(report: Report, path: str | os.PathLike, *, assets: str | os.PathLike | None = None) -> Path:
    """Render and write the HTML atomically; returns the path.

    Args:
        assets: also write, under this directory, every figure as PNG and PDF (``figures/...``, see
            :func:`render_html`) and per collection x language ``leaderboards/<collection>/<lang>/``
            ``leaderboard.{md,tex,csv,json,html}``, ``tests.csv`` and ``gaps/<collection>.csv``.
    """
    path = Path(path)
    with atomic_write(path) as handle:
        if assets is None:
            handle.write(render_html(report))
            return path
        # The HTML and every asset appear together or not at all: the assets are staged, the HTML written
        # and synced (a full disk shows here), then the assets move in and the HTML is renamed into place.
        with staged_outputs(assets) as stage:
            save_tables(report, stage)
            handle.write(render_html(report, figure_dir=stage / "figures"))
            handle.flush()
            os.fsync(handle.fileno())
    return path


def save_tables(report: Report, directory: str | os.PathLike) -> list[Path]:
    """Write every leaderboard (all formats), its tests (CSV) and the gap tables (CSV); returns the paths."""
    directory = Path(directory)
    written: list[Path] = []
    for t in report.tables:
        folder = inside(directory, directory / "leaderboards" / safe_filename(t.collection) / safe_filename(t.lang))
        written += t.leaderboard.save(folder)
        if t.comparison is not None:
            written.append(write_csv(t.comparison.to_dataframe(), folder / "tests.csv"))
    for collection, gap in report.gaps.items():
        path = inside(directory, directory / "gaps" / f"{safe_filename(collection)}.csv")
        written.append(write_csv(gap.to_dataframe(), path, index=True))
    return written


def _comparison_details(comparison: Comparison, primary: str) -> str:
    frame = comparison.to_dataframe()
    frame = frame[["baseline", "system", "metric", "mean_difference", "ci_low", "ci_high", "effect_size",
                   "p_value", "p_adjusted", "significant", "wins", "ties", "losses"]]
    frame = frame.rename(columns={"mean_difference": "Δ mean", "ci_low": "CI low", "ci_high": "CI high",
                                  "effect_size": "Cohen's d", "p_adjusted": "p (corrected)"})
    level = f"{comparison.config.ci_level:.0%}"
    table = frame.to_html(index=False, border=0, classes="tests", float_format=lambda x: f"{x:.4g}")
    return (f"<details><summary>All {len(frame)} tests (Δ = system − baseline, {level} bootstrap CI of Δ, "
            f"paired Cohen's d, wins/ties/losses over queries)</summary>{table}</details>")


def _provenance_rows(runs: Sequence[RunEntry], hashes: Mapping[Path, str]) -> list[dict[str, str]]:
    return [
        {
            "collection": e.collection, "lang": e.lang, "system": e.system, "run file": e.path.name,
            "run sha256": hashes.get(e.path, "")[:16], "tag": e.tag, "model": e.model,
            "model sha256": e.model_sha256[:16], "data sha256": e.data_sha256[:16], "command": e.command,
        }
        for e in runs
    ]


def _provenance_details(runs: Sequence[RunEntry], hashes: Mapping[Path, str]) -> str:
    return f"<details><summary>How these runs were made</summary>{_provenance_table(runs, hashes)}</details>"


def _provenance_table(runs: Sequence[RunEntry], hashes: Mapping[Path, str]) -> str:
    """One row of facts per run, its command on a full-width row below (long commands stay readable)."""
    rows = _provenance_rows(runs, hashes)
    columns = [c for c in rows[0] if c != "command" and any(r[c] for r in rows)] if rows else []
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = []
    for r in rows:
        body.append('<tr class="run">' + "".join(
            f'<td class="hash"><code>{_e(r[c])}</code></td>' if c.endswith("sha256") else f"<td>{_e(r[c])}</td>"
            for c in columns
        ) + "</tr>")
        command = r["command"] or "(no command recorded)"
        body.append(f'<tr class="command"><td colspan="{len(columns)}"><code>$ {_e(command)}</code></td></tr>')
    note = ("<p class=\"note\">Hashes are shown to 16 hex digits (run sha256: of the run file itself; model and "
            "data sha256: as recorded in manifest.json); commands as recorded in manifest.json.</p>")
    return (f'<table class="provenance"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
            f"{note}")


def _tables_of(report: Report, collection: str) -> list[TableResult]:
    """The collection's tables in reading order: oracle language, high-, then low-resource, then others."""
    groups = report.language_groups.get(collection, {})
    rank = {"oracle": 0, "high": 1, "low": 2}
    return sorted((t for t in report.tables if t.collection == collection),
                  key=lambda t: (rank.get(groups.get(t.lang, ""), 3), t.lang))


def _group_label(group: str | None) -> str:
    if not group:
        return ""
    return " (oracle language)" if group == "oracle" else f" ({_e(group)}-resource)"


def _builtin_groups(collection: str) -> dict[str, str]:
    """``{lang: group}`` of a built-in collection of that name, or ``{}`` when there is none."""
    try:
        from clir_eval.collections.registry import load_collection

        found = load_collection(collection, validate=False)
    except (KeyError, ValueError, OSError, ImportError) as exc:
        logger.debug("no built-in collection %r for language groups: %s", collection, exc)
        return {}
    return {lang: found.language_group(lang) for lang in found.languages}


def _img(png: bytes, alt: str, wide: bool = False) -> str:
    data = base64.b64encode(png).decode("ascii")
    kind = ' class="wide"' if wide else ""
    return (f'<figure{kind}><img src="data:image/png;base64,{data}" alt="{_e(alt)}">'
            f"<figcaption>{_e(alt)}</figcaption></figure>")


def _anchor(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in text).lower()


def _e(text: object) -> str:
    return html.escape(str(text))


def _first_repeat(names: Sequence[str]) -> str:
    seen = set()
    for name in names:
        if name in seen:
            return name
        seen.add(name)
    return ""


_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#222;background:#fff;margin:0}
main{max-width:1100px;margin:0 auto;padding:1.5rem 2rem 4rem;line-height:1.45}
h1{font-size:1.7rem;margin-bottom:.3rem}h2{border-bottom:2px solid #ddd;padding-bottom:.2rem;margin-top:2.2rem}
h3{margin-top:1.6rem}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:.15rem 1rem;font-size:.92rem}
dl.facts dt{font-weight:600;color:#555}dl.facts dd{margin:0}
pre,code{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.85rem}
pre{background:#f6f8fa;padding:.6rem .8rem;border-radius:4px;overflow-x:auto;white-space:pre-wrap}
nav{background:#f6f8fa;border-radius:6px;padding:.3rem 1.2rem .8rem;margin:1rem 0}
nav h2{border:none;margin-top:.6rem;font-size:1.1rem}nav ol{margin:.2rem 0}
table{border-collapse:collapse;margin:.6rem 0;font-size:.9rem}
th,td{padding:.25rem .7rem;border-bottom:1px solid #e3e3e3;text-align:right}
th:first-child,td:first-child{text-align:left}thead th{border-bottom:2px solid #999;background:#fafafa}
table.provenance td,table.provenance th,table.tests td,table.tests th{text-align:left;font-size:.8rem}
table.provenance td{white-space:nowrap}table.provenance tr.run td{border-bottom:none;padding-top:.5rem}
table.provenance tr.command td{white-space:normal;padding:0 .7rem .5rem 1.5rem;color:#444}
table.provenance tr.command code{overflow-wrap:anywhere}
.figs{display:grid;grid-template-columns:1fr 1fr;gap:.3rem 1rem}.figs figure{margin:.3rem 0}
sup{color:#1a5fb4;font-weight:600}
ul.legend{font-size:.82rem;color:#555;margin-top:.2rem}
details{margin:.5rem 0}summary{cursor:pointer;color:#1a5fb4}
figure{margin:1rem 0}figure img{max-width:min(100%,860px);height:auto}figure.wide img{max-width:100%}figcaption{font-size:.8rem;color:#666}
p.note{font-size:.8rem;color:#666}
"""
