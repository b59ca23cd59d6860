"""Adversarial inputs to the evaluation side (issue 31): C number grammar, score precision, undefined tests,
markup in names, paths out of the output directory, clean stdout, and the OS refusing a write."""

from __future__ import annotations

import ctypes
import errno
import json
import logging
import math
import random
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from clir_eval.cli import app
from clir_eval.collections.readers import read_qrels
from clir_eval.evaluation.evaluate import evaluate_runs, qrels_from_records
from clir_eval.io import InputFileError, c_atof, c_atol
from clir_eval.retrieval.runs import read_run

FIXTURES = Path(__file__).parent / "fixtures" / "trec_eval10"

_LIBC = ctypes.CDLL(None)
_LIBC.strtod.restype = ctypes.c_double
_LIBC.strtod.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
_LIBC.atol.restype = ctypes.c_long
_LIBC.atol.argtypes = [ctypes.c_char_p]


def libc_atof(text: str) -> float:
    """The C library's own ``atof`` (``strtod``): the oracle trec_eval reads scores with."""
    return _LIBC.strtod(text.encode("utf-8"), None)


def libc_atol(text: str) -> int:
    return _LIBC.atol(text.encode("utf-8"))


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


# ---- 1. C's number grammar --------------------------------------------------------------------------------

def test_c_atof_and_atol_agree_with_the_c_library_on_random_text():
    rng = random.Random(31)
    alphabet = "0123456789.eEpPxX+-_ abfinINFty()\t٩\x1c"
    for _ in range(20_000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 8)))
        expected = libc_atof(text)
        read = c_atof(text)
        got = 0.0 if read is None else read.value
        assert (math.isnan(expected) and math.isnan(got)) or (
            got == expected and math.copysign(1, got) == math.copysign(1, expected)), text
        read = c_atol(text)
        assert (0 if read is None else read.value) == libc_atol(text), text


@pytest.mark.parametrize("text, value", [
    ("0_9", 0.0), ("٩", 0.0), ("1e5x", 1e5), ("+.5e1", 5.0), ("-0x1p3", -8.0), ("1e", 1.0), ("5.", 5.0),
    ("1e999", math.inf), ("-inf", -math.inf), ("0x", 0.0), ("９", 0.0),
])
def test_run_scores_are_read_as_trec_eval_atof_reads_them(tmp_path, caplog, text, value):
    path = tmp_path / "x.run"
    path.write_text(f"q1 Q0 d1 1 {text} t\nq1 Q0 d2 2 0.25 t\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        run = read_run(path)
    assert run["q1"]["d1"] == value == libc_atof(text)
    if c_atof(text) is None or not c_atof(text).exact:  # read differently from Python's float(): said once
        assert "x.run:1" in caplog.text and "atof" in caplog.text


@pytest.mark.parametrize("text, value", [("0_1", 0), ("1.9", 1), ("٣", 0), ("+2", 2), ("0x10", 0),
                                         ("99999999999999999999", 2**63 - 1)])
def test_qrels_relevance_is_read_as_trec_eval_atol_reads_it(tmp_path, text, value):
    path = tmp_path / "qrels"
    path.write_text(f"q1 0 d1 {text}\nq1 0 d2 1\n", encoding="utf-8")
    assert {q.docid: q.relevance for q in read_qrels(path)}["d1"] == value == libc_atol(text)


@pytest.mark.parametrize("reader, line", [(read_run, "q1 Q0 d1 1 high t\n"), (read_qrels, "q1 0 d1 yes\n")])
def test_text_that_no_reader_sees_a_number_in_is_still_refused(tmp_path, reader, line):
    # trec_eval's atof reads 0 here, but pytrec_eval's readers (float(), int()) refuse it: so do we.
    path = tmp_path / "input"
    path.write_text(line, encoding="utf-8")
    with pytest.raises(InputFileError, match=r"input:1: .*not a"):
        reader(path)


def test_scores_equal_at_float32_tie_and_break_by_docid_as_pytrec_eval():
    import pytrec_eval

    qrels = {"q1": {"b": 1, "a": 0}}
    run = {"q1": {"a": 0.5000000000000001, "b": 0.5}}  # equal as float32: docid descending puts b first
    ours = evaluate_runs(qrels, {"r": run}, ["mrr"]).means["r"]["mrr"]
    theirs = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(run)["q1"]["recip_rank"]
    assert ours == theirs == 1.0
    # trec_eval 10 keeps doubles: a scores higher.
    assert evaluate_runs(qrels, {"r": run}, ["mrr"], trec_eval_version=10).means["r"]["mrr"] == 0.5


_SHARED = {  # our name -> trec_eval's, for every measure clir-eval shares with pytrec_eval
    "map": "map", "ndcg": "ndcg", "r-precision": "Rprec", "bpref": "bpref", "mrr": "recip_rank",
    "precision@5": "P_5", "precision@10": "P_10", "recall@10": "recall_10", "recall@100": "recall_100",
    "ndcg@10": "ndcg_cut_10", "map@10": "map_cut_10", "hit_rate@5": "success_5", "hit_rate@10": "success_10",
}


def _adversarial_files(tmp_path: Path, seed: int) -> tuple[Path, Path, list[str]]:
    """A run and qrels full of near-ties, underscores, non-ASCII digits, exponents, hex and signs."""
    rng = random.Random(seed)
    oddities = ["0_9", "٩", "1e-3", "1E+2", "-0.0", "0.0", "+.5", "0x1.8p-1", "1e5x", "-1e-310", "3.4028236e38",
                "1e39", "-inf", "inf", "0.30000000000000004", "0.3", "0.5000000000000001", "0.5", "0.50000006"]
    run_lines, qrels_lines = [], []
    for q in range(12):
        qid = f"q{q}"
        docs = [f"d{rng.randint(0, 60):02d}" for _ in range(40)]
        for rank, docid in enumerate(dict.fromkeys(docs), start=1):
            score = rng.choice(oddities) if rng.random() < 0.6 else repr(rng.choice([0.5, 0.25]) + rng.random() * 1e-9)
            run_lines.append(f"{qid} Q0 {docid} {rank} {score} adv")
        for docid in dict.fromkeys(f"d{rng.randint(0, 60):02d}" for _ in range(15)):
            rel = rng.choice(["0", "1", "2", "0_1", "1_0", "٣", "1.7", "+1", "-1", "3"])
            qrels_lines.append(f"{qid} 0 {docid} {rel}")
    run_path, qrels_path = tmp_path / "adv.run", tmp_path / "adv.qrels"
    run_path.write_text("\n".join(run_lines) + "\n", encoding="utf-8")
    qrels_path.write_text("\n".join(qrels_lines) + "\n", encoding="utf-8")
    return run_path, qrels_path, run_lines


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_adversarial_runs_agree_with_pytrec_eval_on_every_shared_metric(tmp_path, seed):
    import pytrec_eval

    run_path, qrels_path, _ = _adversarial_files(tmp_path, seed)
    # pytrec_eval gets what trec_eval's own readers (C's atof and atol) make of the files.
    their_run: dict = {}
    for line in run_path.read_text(encoding="utf-8").splitlines():
        qid, _, docid, _, score, _ = line.split()
        their_run.setdefault(qid, {})[docid] = libc_atof(score)
    their_qrels: dict = {}
    for line in qrels_path.read_text(encoding="utf-8").splitlines():
        qid, _, docid, rel = line.split()
        their_qrels.setdefault(qid, {})[docid] = libc_atol(rel)
    theirs = pytrec_eval.RelevanceEvaluator(their_qrels, set(_SHARED.values())).evaluate(their_run)

    qrels = qrels_from_records(read_qrels(qrels_path))
    ours = evaluate_runs(qrels, {"r": read_run(run_path)}, list(_SHARED), judged_queries_only=True)
    assert qrels == their_qrels
    for i, qid in enumerate(ours.qids):
        for name, measure in _SHARED.items():
            assert ours.per_query["r"][name][i] == pytest.approx(theirs[qid][measure], abs=1e-12), (qid, name)


def test_trec_eval_10_reading_matches_trec_eval_10s_own_test_output():
    # tests/fixtures/trec_eval10: trec_eval 10.0's test/qrels.comment.test, results.comment.test (scores at full
    # double precision) and the output trec_eval 10.0 gives for them (out.comment.test).
    expected = {}
    for line in (FIXTURES / "out.comment.test").read_text().splitlines():
        name, _, value = line.split()
        expected[name] = value
    names = {"map": "map", "r-precision": "Rprec", "bpref": "bpref", "mrr": "recip_rank",
             **{f"precision@{k}": f"P_{k}" for k in (5, 10, 15, 20, 30, 100, 200, 500, 1000)}}
    qrels = qrels_from_records(read_qrels(FIXTURES / "qrels.comment.test.gz"))
    run = read_run(FIXTURES / "results.comment.test.gz")
    result = evaluate_runs(qrels, {"r": run}, list(names), judged_queries_only=True, trec_eval_version=10)
    assert result.num_queries["r"] == int(expected["num_q"])
    for ours, theirs in names.items():
        assert f"{result.means['r'][ours]:.4f}" == expected[theirs], ours


def test_the_trec_eval_option_on_the_command_line(tmp_path):
    (tmp_path / "q").write_text("q1 0 b 1\nq1 0 a 0\n")
    (tmp_path / "r.run").write_text("q1 Q0 a 1 0.5000000000000001 t\nq1 Q0 b 2 0.5 t\n")
    means = {}
    for version in ("9", "10"):
        result = invoke("evaluate", tmp_path / "r.run", "--qrels", tmp_path / "q", "-m", "mrr", "--json",
                        "--trec-eval", version)
        assert result.exit_code == 0, result.output
        means[version] = json.loads(result.stdout)["r"]["mrr"]
    assert means == {"9": 1.0, "10": 0.5}
    result = invoke("evaluate", tmp_path / "r.run", "--qrels", tmp_path / "q", "--trec-eval", "8")
    assert result.exit_code == 2 and "error:" in result.output and "9, 10" in result.output


# ---- 2. undefined tests say so --------------------------------------------------------------------------------

from clir_eval.evaluation.comparison import CompareConfig, compare_systems  # noqa: E402
from clir_eval.evaluation.leaderboard import build_leaderboard  # noqa: E402
from clir_eval.evaluation.significance import paired_t_test, randomization_test  # noqa: E402

from test_evaluation_report import make_runs, results_dir, write_qrels  # noqa: E402


@pytest.mark.parametrize("control, treatment", [
    ([0.1, 0.2], [0.3, 0.4]),  # two queries, constant difference: scipy's t is inf, p = 0
    ([0.1, 0.2, 0.5, 0.7, 0.9], [0.3, 0.4, 0.7, 0.9, 1.1]),  # constant difference, zero variance
    ([0.5, 0.2], [0.6, 0.9]),  # two queries, varying difference: still fewer than 3
])
def test_a_t_test_whose_statistic_is_undefined_says_so_instead_of_p_0(control, treatment):
    result = paired_t_test(np.array(control), np.array(treatment))
    assert math.isnan(result.p_value) and math.isnan(result.statistic)
    assert "undefined" in result.undefined


def test_differences_equal_up_to_rounding_are_zero_variance_and_scipy_warns_nothing(caplog):
    import warnings

    control = np.array([0.1, 0.2, 0.3, 0.4])
    treatment = control + 0.1  # 0.1 + 0.2 - 0.2 is not 0.1: the differences differ in the last bits
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = paired_t_test(control, treatment)
    assert math.isnan(result.p_value) and "zero variance" in result.undefined


def test_identical_systems_keep_p_1_and_the_randomization_test_is_unchanged():
    scores = np.array([0.1, 0.5, 0.9])
    assert paired_t_test(scores, scores).p_value == 1.0
    two = randomization_test(np.array([0.1, 0.2]), np.array([0.3, 0.4]), seed=0, n_resamples=999)
    assert 0.4 < two.p_value < 0.6 and not two.undefined


def test_an_undefined_test_is_reported_in_the_comparison_the_leaderboard_and_tests_csv(tmp_path):
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}}
    runs = {"base": {"q1": {"x": 2.0, "a": 1.0}, "q2": {"y": 2.0, "b": 1.0}},  # rr 0.5 on both
            "sys": {"q1": {"a": 2.0}, "q2": {"b": 2.0}}}  # rr 1 on both: constant difference 0.5
    write_qrels(tmp_path / "qrels", qrels)
    from clir_eval.retrieval.runs import write_run

    for name, run in runs.items():
        write_run(tmp_path / f"{name}.run", run, tag=name)
    result = invoke("compare", tmp_path / "base.run", tmp_path / "sys.run", "--qrels", tmp_path / "qrels",
                    "--baseline", "base", "-m", "mrr", "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    import pandas as pd

    tests = pd.read_csv(tmp_path / "out" / "tests.csv")
    assert tests["p_value"].isna().all() and not tests["significant"].any()
    assert tests["undefined"].str.contains("t-test undefined on 2 queries").all()
    assert tests["ci_low"].isna().all()  # nor a bootstrap interval from 2 queries
    markdown = (tmp_path / "out" / "leaderboard.md").read_text()
    assert "<sup>" not in markdown and "Not tested, no mark: sys vs base on mrr: t-test undefined" in markdown
    assert json.loads((tmp_path / "out" / "leaderboard.json").read_text())["undefined"][0]["system"] == "sys"


# ---- 3. markup in names ---------------------------------------------------------------------------------------

def test_markup_in_names_is_escaped_in_markdown_and_latex(tmp_path):
    qrels, runs = make_runs(0, n=12)
    write_qrels(tmp_path / "qrels", qrels)
    from clir_eval.retrieval.runs import write_run

    paths = []
    for name in ("bm25", "student"):
        write_run(tmp_path / f"{name}.run", runs[name], tag=name)
        paths.append(tmp_path / f"{name}.run")
    script, latex = "<script>alert(1)</script>", r"\input{/etc/passwd}"
    result = invoke("compare", *paths, "--qrels", tmp_path / "qrels", "--name", latex, "--name", script,
                    "--baseline", latex, "--not-best", script, "--title", "<b>t</b>", "-m", "mrr",
                    "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    markdown = (tmp_path / "out" / "leaderboard.md").read_text()
    assert "<script>" not in markdown and "<b>" not in markdown and "&lt;script&gt;" in markdown
    tex = (tmp_path / "out" / "leaderboard.tex").read_text()
    assert r"\input{" not in tex and r"\textbackslash{}input\{/etc/passwd\}" in tex
    page = (tmp_path / "out" / "leaderboard.html").read_text()
    assert "<script>" not in page and "&lt;script&gt;" in page


# ---- 4. output paths stay inside their directory --------------------------------------------------------------

def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("collection, lang", [("..", ".."), ("../../escape", "a/../../b"), (".", "..")])
def test_a_manifest_cannot_make_report_write_outside_its_assets(tmp_path, collection, lang):
    root = results_dir(tmp_path / "in", with_manifest=True)
    manifest = json.loads((root / "manifest.json").read_text())
    for entry in manifest["runs"]:
        original = entry["path"].split("/")[2]  # runs/toy/<lang>/<system>.run
        entry["collection"], entry["lang"] = collection, lang if original == "sw" else original
    (root / "manifest.json").write_text(json.dumps(manifest))
    before = _files(tmp_path)
    assets, html = tmp_path / "in" / "results" / "assets" / "deep", tmp_path / "in" / "results" / "r.html"
    result = invoke("report", root, "--out", html, "--assets", assets, "--test", "t")
    assert result.exit_code == 0, result.output
    new = _files(tmp_path) - before
    assert new and all(p == html or p.is_relative_to(assets) for p in new), sorted(map(str, new))


def test_safe_filename_never_names_a_parent_and_inside_refuses_an_escape(tmp_path):
    from clir_eval.io import inside, safe_filename

    assert safe_filename("..") == "__" and safe_filename(".") == "_" and safe_filename("a/../b") == "a_.._b"
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "link").symlink_to(tmp_path)
    with pytest.raises(ValueError, match="outside the output directory"):
        inside(tmp_path / "out", tmp_path / "out" / "link" / "x")
    assert inside(tmp_path / "out", tmp_path / "out" / "a" / "b") == tmp_path / "out" / "a" / "b"


# ---- 5. clean channels ----------------------------------------------------------------------------------------

def test_evaluate_json_writes_only_json_on_stdout_and_logs_on_stderr(tmp_path):
    import subprocess
    import sys

    (tmp_path / "q").write_text("q1 0 b 1\nq1 0 a 0\n")
    # a score atof reads differently from float() and a second run tag: two warnings
    (tmp_path / "r.run").write_text("q1 Q0 a 1 0_9 t\nq1 Q0 b 2 0.5 other\n")
    done = subprocess.run([sys.executable, "-m", "clir_eval.cli", "evaluate", str(tmp_path / "r.run"), "--qrels",
                           str(tmp_path / "q"), "-m", "mrr,r-precision", "--json"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"r": {"mrr": 1.0, "r-precision": 1.0}}
    assert "atof" in done.stderr and "run tag" in done.stderr
    assert "Warning:" not in done.stderr  # third-party warnings are filtered or logged, not printed raw


# ---- 6. the OS says no ----------------------------------------------------------------------------------------

@pytest.fixture()
def compare_files(tmp_path):
    qrels, runs = make_runs(0, n=10)
    write_qrels(tmp_path / "qrels", qrels)
    from clir_eval.retrieval.runs import write_run

    paths = []
    for name in ("bm25", "student"):
        write_run(tmp_path / f"{name}.run", runs[name], tag=name)
        paths.append(tmp_path / f"{name}.run")
    return ["compare", *paths, "--qrels", tmp_path / "qrels", "--baseline", "bm25", "-m", "mrr"]


def _fail_on_call(n: int, error: OSError, real):
    calls = {"n": 0}

    def fake(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] >= n:
            raise error
        return real(*args, **kwargs)
    return fake


def _no_leftovers(directory: Path) -> None:
    assert not [p for p in directory.rglob("*") if p.name.endswith(".tmp")]


@pytest.mark.parametrize("existing", [False, True])
def test_compare_on_a_full_disk_names_the_out_path_and_writes_no_partial_set(tmp_path, monkeypatch,
                                                                          compare_files, existing):
    import os

    out = tmp_path / "out"
    if existing:
        out.mkdir()
        (out / "leaderboard.md").write_text("old")
    monkeypatch.setattr(os, "fsync", _fail_on_call(4, OSError(errno.ENOSPC, "No space left on device"), os.fsync))
    result = invoke(*compare_files, "--out", out)
    assert result.exit_code == 2, result.output
    assert f"error: {out}: No space left on device" in " ".join(result.output.split())
    assert (sorted(p.name for p in out.iterdir()) == ["leaderboard.md"] and
            (out / "leaderboard.md").read_text() == "old") if existing else not out.exists()
    _no_leftovers(tmp_path)


@pytest.mark.parametrize("code, message", [(errno.EROFS, "Read-only file system"), (errno.EACCES, "Permission denied")])
def test_compare_on_a_read_only_or_forbidden_directory_names_the_out_path(tmp_path, monkeypatch, compare_files,
                                                                        code, message):
    import tempfile

    out = tmp_path / "out"

    def refuse(*args, dir=None, **kwargs):  # noqa: A002 - tempfile's own keyword
        raise OSError(code, message, str(Path(dir) / ".out.x1y2.tmp"))
    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    monkeypatch.setattr(tempfile, "mkdtemp", refuse)
    result = invoke(*compare_files, "--out", out)
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert f"error: {out}: {message}" in text and ".tmp" not in text
    assert not out.exists()


def test_compare_refused_while_moving_in_puts_back_what_it_moved(tmp_path, monkeypatch, compare_files):
    import os

    out = tmp_path / "out"
    out.mkdir()
    (out / "leaderboard.md").write_text("old")
    (out / "mine.txt").write_text("kept")
    real = os.replace

    def replace(src, dst):  # the fourth file moved into out is refused
        if Path(dst).parent == out and Path(src).parent != out and not Path(dst).name.startswith("."):
            replace.n += 1
            if replace.n == 4:
                raise PermissionError(errno.EACCES, "Permission denied", str(dst))
        return real(src, dst)
    replace.n = 0
    monkeypatch.setattr(os, "replace", replace)
    result = invoke(*compare_files, "--out", out)
    assert result.exit_code == 2, result.output
    assert f"error: {out}: Permission denied" in " ".join(result.output.split())
    assert sorted(p.name for p in out.rglob("*")) == ["leaderboard.md", "mine.txt"]
    assert (out / "leaderboard.md").read_text() == "old"
    _no_leftovers(tmp_path)


def test_report_on_a_full_disk_leaves_neither_html_nor_assets(tmp_path, monkeypatch):
    import os

    root = results_dir(tmp_path, with_manifest=True)
    before = _files(tmp_path)
    monkeypatch.setattr(os, "fsync", _fail_on_call(12, OSError(errno.ENOSPC, "No space left on device"), os.fsync))
    result = invoke("report", root, "--test", "t")
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "error:" in text and "No space left on device" in text and ".tmp" not in text
    assert str(root / "report") in text or str(root / "report.html") in text
    assert _files(tmp_path) == before
    assert not (root / "report").exists()


def test_a_study_s_trec_eval_setting_reaches_its_report(tmp_path):
    """``evaluation.trec_eval: 10`` in a study config is the reading of its report (and of ``report`` later)."""
    from clir_eval.evaluation.manifest import read_results
    from clir_eval.evaluation.report import build_report
    from clir_eval.experiment.config import EvaluationSpec, load_config

    root = tmp_path / "study"
    (root / "runs" / "toy" / "sw").mkdir(parents=True)
    (root / "runs" / "toy" / "qrels.txt").write_text("q1 0 b 1\nq1 0 a 0\n")
    (root / "runs" / "toy" / "sw" / "r.run").write_text("q1 Q0 a 1 0.5000000000000001 r\nq1 Q0 b 2 0.5 r\n")
    means = {}
    for version in (9, 10):
        spec = EvaluationSpec(metrics=("mrr",), baselines=(), trec_eval=version)
        significance = {f: getattr(spec, f) for f in ("test", "seed", "trec_eval")}
        (root / "manifest.json").write_text(json.dumps({
            "metrics": ["mrr"], "significance": significance,
            "runs": [{"path": "runs/toy/sw/r.run", "qrels": "runs/toy/qrels.txt", "collection": "toy", "lang": "sw",
                      "system": "r"}]}))
        report = build_report(read_results(root))
        means[version] = report.tables[0].result.means["r"]["mrr"]
    assert means == {9: 1.0, 10: 0.5}
    default = Path(__file__).parent.parent / "configs" / "default.yaml"
    assert load_config(default, {"evaluation": {"trec_eval": 10}}).evaluation.trec_eval == 10
    with pytest.raises(ValueError, match="trec_eval"):
        load_config(default, {"evaluation": {"trec_eval": 8}})
