"""Leaderboard rendering, gap analysis, results-directory reading and the HTML report."""

from __future__ import annotations

import dataclasses
import io
import json
import re

import numpy as np
import pandas as pd
import pytest

from clir_eval.evaluation.comparison import CompareConfig, compare_systems
from clir_eval.evaluation.evaluate import evaluate_runs
from clir_eval.evaluation.gaps import gap_analysis
from clir_eval.evaluation.leaderboard import build_leaderboard
from clir_eval.evaluation.manifest import read_results
from clir_eval.evaluation.report import build_report, write_report
from clir_eval.io import InputFileError, sha256_file
from clir_eval.retrieval.runs import write_run

SYSTEMS = {"bm25": 10, "student": 2, "oracle": 1}  # typical rank of the relevant document


def make_runs(seed: int, n: int = 40, quality=SYSTEMS):
    rng = np.random.default_rng(seed)
    qrels = {f"q{i:02d}": {f"d{i}": 1, f"d{i + 100}": 0} for i in range(n)}
    runs = {}
    for system, typical in quality.items():
        run = {}
        for i in range(n):
            rank = min(int(rng.exponential(typical)), 19)
            docs = [f"d{j}" for j in rng.choice(np.arange(200, 400), size=20, replace=False)]
            docs[rank] = f"d{i}"
            run[f"q{i:02d}"] = {d: 20.0 - r for r, d in enumerate(docs)}
        runs[system] = run
    return qrels, runs


def write_qrels(path, qrels):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{q} 0 {d} {r}\n" for q, j in qrels.items() for d, r in j.items()))


def results_dir(tmp_path, with_manifest: bool):
    """runs/<collection>/<lang>/<system>.run for 3 languages; qrels per collection."""
    root = tmp_path / "results"
    entries = []
    for i, (lang, scale) in enumerate((("de", 1.0), ("sw", 2.5), ("en", 0.8))):
        quality = {s: typical * scale if s != "oracle" else typical for s, typical in SYSTEMS.items()}
        qrels, runs = make_runs(i, quality=quality)
        write_qrels(root / "runs" / "toy" / "qrels.txt", qrels)
        for system, run in runs.items():
            path = root / "runs" / "toy" / lang / f"{system}.run"
            write_run(path, run, tag=system)
            entries.append({"path": f"runs/toy/{lang}/{system}.run", "qrels": "runs/toy/qrels.txt",
                            "command": ["clir-eval", "retrieve", "--system", system, "--lang", lang],
                            "model": f"models/{system}", "model_sha256": f"{i}" * 64, "data_sha256": "f" * 64})
    if with_manifest:
        manifest = {"title": "Toy <report>", "metrics": ["ndcg@10", "mrr"], "baselines": ["bm25"],
                    "oracle": "oracle", "language_groups": {"de": "high", "sw": "low", "en": "oracle"},
                    "significance": {"test": "randomization", "n_resamples": 300, "seed": 1},
                    "command": "clir-eval experiment run toy.yaml", "runs": entries}
        (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def toy_board():
    qrels, runs = make_runs(0)
    result = evaluate_runs(qrels, runs, ["ndcg@10", "mrr", "recall@10"])
    comparison = compare_systems(result, CompareConfig(baselines=("bm25",), n_resamples=500))
    return result, comparison, build_leaderboard(result, comparison, title="toy / de", exclude_from_best=["oracle"])


def test_leaderboard_marks_best_and_significance_and_renders_every_format(tmp_path):
    result, comparison, board = toy_board()
    # the oracle is excluded from bold, so the student (better than bm25) holds the best ndcg@10
    assert result.means["oracle"]["ndcg@10"] > result.means["student"]["ndcg@10"] > result.means["bm25"]["ndcg@10"]
    assert board.best["ndcg@10"] == {"student"}
    pair = comparison.get("bm25", "student", "ndcg@10")
    assert pair.significant and [m.text() for m in board.marks[("student", "ndcg@10")]] == ["a"]
    assert ("bm25", "ndcg@10") not in board.marks
    assert any("Holm-corrected over the 6 tests" in line for line in board.legend)

    markdown = board.to_markdown()
    assert "| bm25 (a)" in markdown and "**" in markdown and "<sup>a</sup>" in markdown
    latex = board.to_latex()
    assert all(rule in latex for rule in (r"\toprule", r"\midrule", r"\bottomrule", r"\textbf{"))
    assert "bm25 (a)" in latex and "$^{a}$" in latex and "ndcg@10" in latex
    frame = pd.read_csv(io.StringIO(board.to_csv()), index_col="system")
    for system in result.runs:  # CSV keeps every bit
        assert frame.loc[system, "mrr"] == result.means[system]["mrr"]
    assert frame.loc["student", "ndcg@10 marks"] == "a"
    data = json.loads(board.to_json())
    assert data["means"]["student"]["mrr"] == result.means["student"]["mrr"]
    assert data["marks"]["student"]["ndcg@10"] == ["a"] and data["baselines"] == {"bm25": "a"}
    # The settings are data, and the legend is written from them.
    assert data["significance"] == {"test": "t", "correction": "holm", "alpha": 0.05, "seed": 42, "n_resamples": 500,
                                    "family": "table", "family_size": 6}
    stricter = dataclasses.replace(board, significance=dataclasses.replace(board.significance, alpha=0.01,
                                                                          correction="bonferroni"))
    assert any("Bonferroni-corrected over the 6 tests of this table, alpha = 0.01" in line for line in stricter.legend)
    assert "alpha = 0.01" in stricter.to_markdown() and "alpha = 0.05" not in stricter.to_markdown()
    per_metric = dataclasses.replace(board, significance=dataclasses.replace(board.significance, family="metric"),
                                     family_size=2)
    assert any("Holm-corrected within each metric (over its 2 tests), alpha = 0.05" in line
               for line in per_metric.legend)
    paths = board.save(tmp_path / "board")
    assert sorted(p.suffix for p in paths) == [".csv", ".html", ".json", ".md", ".tex"]
    assert "<strong>" in (tmp_path / "board" / "leaderboard.html").read_text()


def test_worse_than_baseline_is_marked_with_an_arrow():
    qrels, runs = make_runs(1, quality={"strong": 1, "weak": 12})
    result = evaluate_runs(qrels, runs, ["mrr"])
    board = build_leaderboard(result, compare_systems(result, CompareConfig(baselines=("strong",))))
    assert [m.text() for m in board.marks[("weak", "mrr")]] == ["a↓"]
    assert r"a{\downarrow}" in board.to_latex()


def test_latex_and_markdown_escape_names():
    qrels, runs = make_runs(2, quality={"bm25_rm3": 5, "a|b&c": 3})
    board = build_leaderboard(evaluate_runs(qrels, runs, ["mrr"]), title="x_y")
    assert r"bm25\_rm3" in board.to_latex() and r"a|b\&c" in board.to_latex()
    assert r"a\|b&amp;c" in board.to_markdown()  # & as an entity: GitHub renders HTML in Markdown


def test_gap_analysis_by_hand():
    scores = {"de": {"s": 0.6, "o": 0.8}, "fr": {"s": 0.4, "o": 0.8}, "sw": {"s": 0.2, "o": 0.5},
              "en": {"s": 0.7, "o": 0.9}}
    groups = {"de": "high", "fr": "high", "sw": "low", "en": "oracle"}
    gap = gap_analysis(scores, groups, metric="mrr", oracle="o")
    assert gap.languages == ("de", "fr", "sw", "en")
    assert gap.group_means["s"] == {"high": pytest.approx(0.5), "low": pytest.approx(0.2)}
    assert gap.gap["s"] == pytest.approx(0.3)
    assert gap.oracle_ratio["s"]["high"] == pytest.approx(0.5 / 0.8)
    assert gap.oracle_ratio["s"]["sw"] == pytest.approx(0.4)
    by_lang = gap_analysis(scores, groups, metric="mrr", oracle_lang="en")
    assert by_lang.oracle_ratio["s"]["low"] == pytest.approx(0.2 / 0.7)
    frame = by_lang.to_dataframe()
    assert frame.loc["o", "gap (high - low)"] == pytest.approx(0.3)
    assert frame.loc["s", "low / oracle"] == pytest.approx(0.2 / 0.7)
    with pytest.raises(ValueError, match="not among the systems"):
        gap_analysis(scores, groups, metric="mrr", oracle="x")


def test_results_directory_is_read_from_the_layout_without_manifest(tmp_path):
    root = results_dir(tmp_path, with_manifest=False)
    results = read_results(root)
    assert not results.from_manifest
    assert {(e.collection, e.lang, e.system) for e in results.runs} == {
        ("toy", lang, s) for lang in ("de", "sw", "en") for s in SYSTEMS
    }
    assert all(e.qrels == root / "runs" / "toy" / "qrels.txt" for e in results.runs)


def test_manifest_runs_list_carries_provenance(tmp_path):
    root = results_dir(tmp_path, with_manifest=True)
    results = read_results(root)
    assert results.from_manifest and results.baselines == ("bm25",) and results.oracle == "oracle"
    entry = next(e for e in results.runs if e.system == "student" and e.lang == "sw")
    assert entry.command == "clir-eval retrieve --system student --lang sw"
    assert entry.model_sha256 == "1" * 64


def test_manifest_errors_name_the_file(tmp_path):
    root = results_dir(tmp_path, with_manifest=True)
    manifest = root / "manifest.json"
    data = json.loads(manifest.read_text())
    data["runs"][0]["path"] = "runs/toy/de/missing.run"
    manifest.write_text(json.dumps(data))
    with pytest.raises(InputFileError, match=r"manifest\.json: runs\[0\]: run file .*missing\.run does not exist"):
        read_results(root)
    manifest.write_text('{"runs": [}')
    with pytest.raises(InputFileError, match=r"manifest\.json:1: not valid JSON"):
        read_results(root)
    with pytest.raises(InputFileError, match="does not exist"):
        read_results(tmp_path / "nowhere")


def test_report_is_one_self_contained_html_with_tables_plots_and_provenance(tmp_path):
    root = results_dir(tmp_path, with_manifest=True)
    report = build_report(read_results(root))
    assert [(t.collection, t.lang) for t in report.tables] == [("toy", "de"), ("toy", "en"), ("toy", "sw")]
    table = report.tables[0]
    assert table.comparison.config.test == "randomization" and table.comparison.config.seed == 1
    assert table.leaderboard.best["ndcg@10"] == {"student"}  # oracle not counted
    gap = report.gaps["toy"]
    assert gap.oracle == "oracle" and gap.gap["student"] > 0
    path = write_report(report, tmp_path / "report.html")
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    assert "Toy &lt;report&gt;" in text  # escaped title
    assert len(re.findall(r'<img src="data:image/png;base64,', text)) >= 3  # per-language, differences, gap
    assert not re.search(r'(src|href)="(https?:|file:|/)', text)  # nothing outside the file
    assert "clir-eval retrieve --system student --lang sw" in text and "1" * 16 in text
    assert sha256_file(root / "runs/toy/sw/student.run")[:16] in text
    assert "high- vs low-resource gap" in text
    assert len(re.findall(r'<table class="[^"]*leaderboard', text)) == 3 + 1  # three languages + the gap table


def test_evaluation_never_imports_torch(tmp_path):
    import subprocess
    import sys

    root = results_dir(tmp_path, with_manifest=True)
    code = (
        "import sys\n"
        "from clir_eval.evaluation.manifest import read_results\n"
        "from clir_eval.evaluation.report import build_report, write_report\n"
        f"write_report(build_report(read_results({str(root)!r}), n_resamples=100), {str(tmp_path / 'r.html')!r})\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
