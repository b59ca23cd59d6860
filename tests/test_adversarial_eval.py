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
