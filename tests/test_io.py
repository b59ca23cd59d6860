"""Atomic writes: all or nothing, with ordinary permissions."""

import os
import stat

import pytest

from clir_eval.io import InputFileError, atomic_directory, atomic_write, has_whitespace, read_text_lines


def test_atomic_write_keeps_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "run.trec"
    target.write_text("old\n")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as handle:
            handle.write("new partial")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["run.trec"]


def test_atomic_outputs_get_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "a.txt") as handle:
            handle.write("x")
        with atomic_directory(tmp_path / "d") as tmp:
            (tmp / "f").write_text("y")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755


def test_atomic_directory_replaces_only_on_success(tmp_path):
    target = tmp_path / "index"
    with atomic_directory(target) as tmp:
        (tmp / "docid").write_text("d1\n")
    with pytest.raises(ValueError):
        with atomic_directory(target) as tmp:
            (tmp / "docid").write_text("broken")
            raise ValueError
    assert (target / "docid").read_text() == "d1\n"


def test_non_utf8_names_file_and_line(tmp_path):
    bad = tmp_path / "topics.tsv"
    bad.write_bytes(b"q1\tfine\nq2\t\xff\xfe bad\n")
    with pytest.raises(InputFileError, match=r"topics.tsv:2: not valid UTF-8"):
        list(read_text_lines(bad))


def test_has_whitespace_agrees_with_str_isspace_on_every_code_point():
    # Ids are checked with the regex for speed; it must refuse exactly what str.isspace refuses,
    # non-breaking and line-separator spaces included.
    disagree = [hex(c) for c in range(0x110000)
                if not 0xD800 <= c <= 0xDFFF and has_whitespace(f"a{chr(c)}b") != chr(c).isspace()]
    assert disagree == []
    assert has_whitespace("doc\u00a01") and has_whitespace("doc\u2028") and not has_whitespace("doc-1")


def test_write_csv_reads_back_every_float_exactly_and_safe_filename_keeps_one_component(tmp_path):
    import numpy as np
    import pandas as pd

    from clir_eval.io import safe_filename, write_csv

    # float32 columns (per-query scores) are where pandas' own format loses digits: it writes 0.1f as "0.1"
    values = np.array([0.1, 1 / 3, 2.0 ** -40, 0.6789], dtype=np.float32)
    frame = pd.DataFrame({"system": ["kd", "kd+ot", "a b", "x"], "mrr": values, "p": [0.1 + 0.2, 1 / 3, 1e-300, 1.0]})
    path = write_csv(frame, tmp_path / "out" / "t.csv")
    back = pd.read_csv(path)
    assert back["mrr"].tolist() == values.astype(np.float64).tolist() and back["p"].tolist() == frame["p"].tolist()
    assert b"\r" not in path.read_bytes()
    assert safe_filename("kd+ot/../x y") == "kd_ot_.._x_y" and "/" not in safe_filename("a/b")
    assert safe_filename("") == "_"
