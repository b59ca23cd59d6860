"""TREC run files: trec_eval's hit order, exact round trips, byte-identical rewrites, located errors, atomicity."""

from __future__ import annotations

import gzip
import logging
import os
from dataclasses import dataclass

import numpy as np
import pytest

from clir_eval.io import InputFileError
from clir_eval.retrieval.runs import RunFile, read_run, read_run_file, sort_hits, write_run


def test_sort_hits_breaks_ties_by_docid_descending_like_trec_eval():
    # trec_eval's comp_sim_docno: score descending, then strcmp(docno2, docno1), i.e. docid descending.
    hits = {"a": 1.0, "b": 1.0, "c": 2.0, "d10": 0.5, "d9": 0.5, "B": 1.0}
    assert [d for d, _ in sort_hits(hits)] == ["c", "b", "a", "B", "d9", "d10"]
    # same order from (docid, score) pairs in any input order
    pairs = list(hits.items())[::-1]
    assert sort_hits(pairs) == sort_hits(hits)


def test_sort_hits_treats_negative_zero_as_a_tie():
    assert [d for d, _ in sort_hits({"x": -0.0, "y": 0.0})] == ["y", "x"]


def _lines(path):
    return path.read_text(encoding="utf-8").splitlines()


def test_write_run_format_ranks_and_tie_order(tmp_path):
    path = tmp_path / "run.trec"
    write_run(path, {"q2": {"a": 1.0, "b": 1.0, "c": 3.0}, "q1": [("x", 0.25)]}, tag="my-run")
    assert _lines(path) == [
        "q1 Q0 x 1 0.25 my-run",
        "q2 Q0 c 1 3.0 my-run",
        "q2 Q0 b 2 1.0 my-run",
        "q2 Q0 a 3 1.0 my-run",
    ]


def test_round_trip_is_exact_for_float32_and_float64_scores(tmp_path):
    rng = np.random.default_rng(0)
    f32 = rng.normal(size=200).astype(np.float32)
    f64 = rng.normal(size=200) * 1e-7 + 0.1
    run = {
        "q32": {f"d{i}": float(s) for i, s in enumerate(f32)},
        "q64": {f"d{i}": float(s) for i, s in enumerate(f64)},
        "qodd": {"tiny": 5e-324, "huge": 1.7976931348623157e308, "neg": -3.25, "third": 1 / 3, "inf": float("inf")},
    }
    path = tmp_path / "run.txt"
    write_run(path, run, tag="t")
    back = read_run(path)
    assert back == run  # bit-exact doubles
    assert all(np.float32(back["q32"][f"d{i}"]) == s for i, s in enumerate(f32))


@dataclass
class _Hit:  # the shape of Pyserini's search results
    docid: str
    score: float


def test_hit_objects_and_numpy_scores_are_accepted(tmp_path):
    path = tmp_path / "run.txt"
    write_run(path, {"q": [_Hit("a", np.float32(0.5)), _Hit("b", np.float64(0.75))]}, tag="t")
    assert _lines(path) == ["q Q0 b 1 0.75 t", "q Q0 a 2 0.5 t"]


def test_same_run_gives_byte_identical_files_whatever_the_insertion_order(tmp_path):
    rng = np.random.default_rng(1)
    run = {f"{q}": {f"doc{d}": float(rng.integers(0, 4)) for d in range(30)} for q in range(12)}
    shuffled = {q: dict(reversed(list(hits.items()))) for q, hits in reversed(list(run.items()))}
    first, second = tmp_path / "a.run", tmp_path / "b.run"
    write_run(first, run, tag="x")
    write_run(second, shuffled, tag="x")
    assert first.read_bytes() == second.read_bytes()
    write_run(first, run, tag="x")  # rewriting in place
    assert first.read_bytes() == second.read_bytes()


def test_depth_keeps_the_best_hits(tmp_path):
    path = tmp_path / "run.txt"
    write_run(path, {"q": {"a": 1.0, "b": 3.0, "c": 2.0}}, tag="t", depth=2)
    assert [line.split()[2] for line in _lines(path)] == ["b", "c"]
    with pytest.raises(ValueError, match="depth"):
        write_run(path, {"q": {"a": 1.0}}, tag="t", depth=0)


@pytest.mark.parametrize("tag", ["", "two words", "tab\tbed", None])
def test_bad_tags_are_rejected(tmp_path, tag):
    with pytest.raises(ValueError, match="tag"):
        write_run(tmp_path / "r", {"q": {"a": 1.0}}, tag=tag)
    assert not (tmp_path / "r").exists()


def test_tag_is_required(tmp_path):
    with pytest.raises(TypeError):
        write_run(tmp_path / "r", {"q": {"a": 1.0}})  # type: ignore[call-arg]


@pytest.mark.parametrize(
    "run, error",
    [
        ({"q 1": {"a": 1.0}}, ValueError),
        ({"": {"a": 1.0}}, ValueError),
        ({1: {"a": 1.0}}, TypeError),
        ({"q": {"a b": 1.0}}, ValueError),
        ({"q": {7: 1.0}}, TypeError),
        ({"q": [("a", 1.0), ("a", 2.0)]}, ValueError),
        ({"q": {"a": float("nan")}}, ValueError),
    ],
)
def test_invalid_ids_duplicates_and_nan_are_rejected(tmp_path, run, error):
    with pytest.raises(error):
        write_run(tmp_path / "r", run, tag="t")


def test_read_run_accepts_irregular_whitespace_and_ignores_rank(tmp_path):
    path = tmp_path / "run.txt"
    path.write_text(
        "q1\tQ0\td1\t1\t2.5\ttag\n"
        "   q1  Q0   d2 99   -1e-3   tag   \n"
        "\n"
        "q2 0 d1 1 7 tag\r\n",
        encoding="utf-8",
    )
    parsed = read_run_file(path)
    assert parsed == RunFile(run={"q1": {"d1": 2.5, "d2": -0.001}, "q2": {"d1": 7.0}}, tag="tag")


def test_read_run_reads_gzip(tmp_path):
    path = tmp_path / "run.txt.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("q Q0 d 1 1.5 g\n")
    assert read_run(path) == {"q": {"d": 1.5}}


@pytest.mark.parametrize(
    "text, line, message",
    [
        ("q Q0 d 1 1.0 t\nq Q0 e 2 0.5\n", 2, "6 columns"),
        ("q Q0 d 1 1.0 t\nq Q0 e 2 0.5 t extra\n", 2, "6 columns"),
        ("q Q0 d 1 1.0 t\n\nq Q0 e 2 high t\n", 3, "not a number"),
        ("q Q0 d 1 nan t\n", 1, "NaN"),
        ("q Q0 d 1 1.0 t\nq Q0 e 2 0.5 t\nq Q0 d 3 0.1 t\n", 3, "duplicate document 'd'"),
    ],
)
def test_malformed_runs_name_the_line(tmp_path, text, line, message):
    path = tmp_path / "bad.run"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputFileError, match=message) as info:
        read_run(path)
    assert info.value.line == line
    assert str(info.value).startswith(f"{path}:{line}:")


def test_empty_run_file_is_an_error(tmp_path):
    path = tmp_path / "empty.run"
    path.write_text("\n", encoding="utf-8")
    with pytest.raises(InputFileError, match="no hits"):
        read_run(path)


def test_mixed_tags_keep_the_first_and_warn_once(tmp_path, caplog):
    path = tmp_path / "run.txt"
    path.write_text("q Q0 a 1 3 one\nq Q0 b 2 2 two\nq Q0 c 3 1 three\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="clir_eval.retrieval.runs"):
        parsed = read_run_file(path)
    assert parsed.tag == "one"
    assert len([r for r in caplog.records if "differs" in r.getMessage()]) == 1


def test_failed_write_leaves_the_old_file_intact_and_no_temp_file(tmp_path):
    path = tmp_path / "run.txt"
    write_run(path, {"q": {"a": 1.0}}, tag="old")
    before = path.read_bytes()
    # "q1" is written first (sorted order); "q2" then fails halfway through the file.
    with pytest.raises(ValueError, match="whitespace"):
        write_run(path, {"q1": {"a": 1.0, "b": 0.5}, "q2": {"bad doc": 1.0}}, tag="new")
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["run.txt"]


def test_write_run_refuses_unicode_whitespace_in_ids_and_reads_back_a_namedtuple_hit(tmp_path):
    from collections import namedtuple

    with pytest.raises(ValueError, match="whitespace"):
        write_run(tmp_path / "a.run", {"q": {"doc\u00a01": 1.0}}, tag="t")
    # Pyserini-style hits (attributes), plain tuples and a mapping all give the same file.
    Hit = namedtuple("Hit", ["score", "docid"])  # attributes win over tuple order
    write_run(tmp_path / "b.run", {"q": [Hit(2.0, "a"), Hit(1.0, "b")]}, tag="t")
    write_run(tmp_path / "c.run", {"q": [("a", 2.0), ("b", 1.0)]}, tag="t")
    write_run(tmp_path / "d.run", {"q": {"b": 1.0, "a": 2.0}}, tag="t")
    assert (tmp_path / "b.run").read_bytes() == (tmp_path / "c.run").read_bytes() == (tmp_path / "d.run").read_bytes()


def test_a_streamed_run_without_a_single_hit_is_not_written(tmp_path):
    """The BM25 path writes query by query; a run in which no query has a hit fails and leaves the old file."""
    from clir_eval.retrieval.runs import write_run_stream

    path = tmp_path / "bm25.run"
    path.write_text("old\n")
    with pytest.raises(ValueError, match="no hit"):
        write_run_stream(path, [("q1", []), ("q2", [])], tag="bm25", empty_error="no hit for any query")
    assert path.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["bm25.run"]
    assert write_run_stream(path, [("q1", []), ("q2", [("d1", 1.0)])], tag="bm25", empty_error="no hit") == 2
    assert path.read_text() == "q2 Q0 d1 1 1.0 bm25\n"
