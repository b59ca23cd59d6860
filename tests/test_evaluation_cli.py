"""The evaluate / compare / report commands, through typer's CliRunner."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import pytrec_eval
from typer.testing import CliRunner

from clir_eval.cli import app
from clir_eval.evaluation.evaluate import evaluate_runs
from clir_eval.retrieval.runs import read_run, write_run

from test_evaluation_report import make_runs, results_dir, write_qrels


@pytest.fixture()
def files(tmp_path):
    qrels, runs = make_runs(3)
    del runs["student"]["q05"]  # a judged query the run does not answer
    write_qrels(tmp_path / "qrels.txt", qrels)
    paths = []
    for system, run in runs.items():
        write_run(tmp_path / f"{system}.run", run, tag=system)
        paths.append(str(tmp_path / f"{system}.run"))
    return tmp_path, qrels, paths


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_evaluate_json_gives_full_precision_means_named_like_ranx(files):
    tmp_path, qrels, paths = files
    result = invoke("evaluate", "--qrels", tmp_path / "qrels.txt", *paths, "--metrics", "map,ndcg@10",
                    "--metrics", "mrr", "--metrics", "r-precision", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert list(data) == ["bm25", "student", "oracle"]
    assert list(data["bm25"]) == ["map", "ndcg@10", "mrr", "r-precision"]
    runs = {name: read_run(tmp_path / f"{name}.run") for name in data}
    expected = evaluate_runs(qrels, runs, ["map", "ndcg@10", "mrr", "r-precision"]).means
    assert data == expected  # exact: JSON floats round-trip
    # and those are trec_eval -c numbers: student's missing query counts as 0 over all 40
    reference = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(runs["student"])
    assert data["student"]["mrr"] == pytest.approx(sum(v["recip_rank"] for v in reference.values()) / 40, abs=1e-12)


def test_evaluate_judged_queries_only_and_per_query(files):
    tmp_path, qrels, paths = files
    result = invoke("evaluate", "--qrels", tmp_path / "qrels.txt", paths[1], "-m", "mrr", "--judged-queries-only",
                    "--json")
    runs = read_run(paths[1])
    reference = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(runs)
    mean = sum(v["recip_rank"] for v in reference.values()) / 39
    assert json.loads(result.output)["student"]["mrr"] == pytest.approx(mean, abs=1e-12)
    result = invoke("evaluate", "--qrels", tmp_path / "qrels.txt", paths[1], "-m", "mrr", "--per-query")
    lines = [line.split("\t") for line in result.output.splitlines()]
    assert len(lines) == 40 + 1 and lines[-1][2] == "all"
    assert {line[2] for line in lines[:-1]} == set(qrels)
    assert float(lines[0][3]) == pytest.approx(reference[lines[0][2]]["recip_rank"], abs=5e-5)
    # averaged over the judged queries only, the query the run missed is left out of both per-query outputs
    result = invoke("evaluate", "--qrels", tmp_path / "qrels.txt", paths[1], "-m", "mrr", "--judged-queries-only",
                    "--per-query", "--json")
    per_query = json.loads(result.output)["student"]["per_query"]
    assert per_query == {qid: {"mrr": pytest.approx(v["recip_rank"], abs=1e-12)} for qid, v in reference.items()}
    result = invoke("evaluate", "--qrels", tmp_path / "qrels.txt", paths[1], "-m", "mrr", "--judged-queries-only",
                    "--per-query")
    lines = [line.split("\t") for line in result.output.splitlines()]
    assert {line[2] for line in lines[:-1]} == set(reference) and len(reference) == 39


def test_evaluate_table_output(files):
    tmp_path, _, paths = files
    result = invoke("evaluate", "--qrels", tmp_path / "qrels.txt", *paths)
    assert result.exit_code == 0, result.output
    assert "student" in result.output and "ndcg@10" in result.output


def test_bad_run_line_is_reported_with_file_and_line(files):
    tmp_path, _, paths = files
    bad = tmp_path / "bad.run"
    bad.write_text("q00 Q0 d1 1 2.0 x\nq01 Q0 d2 1 x\n")
    result = invoke("evaluate", "--qrels", tmp_path / "qrels.txt", bad)
    assert result.exit_code == 2
    assert f"{bad}:2: expected 6 columns" in result.output.replace("\n", "")
    result = invoke("evaluate", "--qrels", tmp_path / "qrels.txt", paths[0], "-m", "ndcg_cut_10")
    assert result.exit_code == 2 and "valid metrics" in result.output
    result = invoke("evaluate", "--qrels", tmp_path / "qrels.txt", paths[0], "--metrics", "map", "ndcg@10")
    assert result.exit_code == 2 and "looks like a metric" in result.output


def test_compare_writes_the_leaderboard_in_every_format(files):
    tmp_path, _, paths = files
    out = tmp_path / "out"
    result = invoke("compare", "--qrels", tmp_path / "qrels.txt", *paths, "--baseline", "bm25", "-m", "ndcg@10,mrr",
                    "--test", "randomization", "--resamples", "500", "--correction", "bonferroni", "--seed", "3",
                    "--not-best", "oracle", "--out", out)
    assert result.exit_code == 0, result.output
    for name in ("leaderboard.md", "leaderboard.tex", "leaderboard.csv", "leaderboard.json", "leaderboard.html",
                 "tests.csv", "per_query.csv"):
        assert (out / name).is_file(), name
    assert sorted(p.name for p in (out / "figures").iterdir()) == [
        "diff_oracle_vs_bm25_ndcg_10.pdf", "diff_oracle_vs_bm25_ndcg_10.png",
        "diff_student_vs_bm25_ndcg_10.pdf", "diff_student_vs_bm25_ndcg_10.png",
    ]
    board = json.loads((out / "leaderboard.json").read_text())
    assert board["best"]["mrr"] == ["student"] and board["marks"]["student"]["mrr"] == ["a"]
    assert any("Bonferroni-corrected over the 4 tests" in line for line in board["legend"])
    first = (out / "tests.csv").read_text()
    invoke("compare", "--qrels", tmp_path / "qrels.txt", *paths, "--baseline", "bm25", "-m", "ndcg@10,mrr",
           "--test", "randomization", "--resamples", "500", "--correction", "bonferroni", "--seed", "3",
           "--not-best", "oracle", "--out", out)
    assert (out / "tests.csv").read_text() == first  # same seed, same p-values
    invoke("compare", "--qrels", tmp_path / "qrels.txt", *paths, "--baseline", "bm25", "-m", "ndcg@10,mrr",
           "--test", "randomization", "--resamples", "500", "--correction", "bonferroni", "--seed", "3",
           "--family", "metric", "--out", tmp_path / "per-metric")
    board = json.loads((tmp_path / "per-metric" / "leaderboard.json").read_text())
    assert board["significance"]["family"] == "metric" and board["significance"]["family_size"] == 2
    assert any("Bonferroni-corrected within each metric (over its 2 tests)" in line for line in board["legend"])
    tests = pd.read_csv(tmp_path / "per-metric" / "tests.csv")
    assert (tests["p_adjusted"] == (tests["p_value"] * 2).clip(upper=1)).all()  # Bonferroni over 2, not 4


def test_compare_rejects_unknown_options(files):
    tmp_path, _, paths = files
    result = invoke("compare", "--qrels", tmp_path / "qrels.txt", *paths, "--baseline", "bm25", "--test", "z")
    assert result.exit_code == 2 and "t, randomization" in result.output
    result = invoke("compare", "--qrels", tmp_path / "qrels.txt", *paths, "--baseline", "nope")
    assert result.exit_code == 2 and "not among the runs" in result.output
    result = invoke("compare", "--qrels", tmp_path / "qrels.txt", *paths, "--baseline", "bm25", "--family", "query")
    assert result.exit_code == 2 and "error: unknown family 'query'; valid families: table, metric" in result.output


def test_report_command_writes_the_html(tmp_path):
    root = results_dir(tmp_path, with_manifest=True)
    result = invoke("report", root, "--test", "t")
    assert result.exit_code == 0, result.output
    text = (root / "report.html").read_text()
    assert "paired t-test" in text and "<img" in text
    assets = root / "report"
    for name in ("per_language.png", "per_language.pdf", "gap.png", "gap.pdf", "de/diff_student_vs_bm25.pdf"):
        assert (assets / "figures" / "toy" / name).is_file(), name
    for name in ("leaderboard.md", "leaderboard.tex", "leaderboard.csv", "leaderboard.json", "tests.csv"):
        assert (assets / "leaderboards" / "toy" / "sw" / name).is_file(), name
    assert (assets / "gaps" / "toy.csv").read_text().startswith("system,de,sw,en,mean high,mean low")
