"""Readers and writers: round trips, TREC topics, and a located error for every kind of bad line."""

import gzip
import json

import pytest

from clir_eval.collections.readers import read_bitext, read_corpus, read_qrels, read_topics
from clir_eval.collections.records import BitextPair, Document, Qrel, Topic
from clir_eval.collections.writers import write_bitext, write_corpus, write_qrels, write_topics
from clir_eval.io import InputFileError


def _write(path, text, encoding="utf-8"):
    path.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return path


def _error(func, *args):
    with pytest.raises(InputFileError) as info:
        result = func(*args)
        if not isinstance(result, list):
            list(result)
    return info.value


# --- round trips ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["sw.tsv", "sw.tsv.gz"])
def test_topics_round_trip_keeps_ids_as_written(tmp_path, name):
    topics = [Topic("007", "Habari za leo", "sw"), Topic("12", "Bei ya mafuta — ñandú 中文", "sw")]
    write_topics(tmp_path / name, topics)
    assert read_topics(tmp_path / name, "sw") == topics


def test_qrels_round_trip(tmp_path):
    qrels = [Qrel("007", "doc-01", 1), Qrel("007", "0042", 0), Qrel("q2", "doc-01", 2)]
    write_qrels(tmp_path / "x.qrels", qrels)
    assert read_qrels(tmp_path / "x.qrels") == qrels
    assert (tmp_path / "x.qrels").read_text() == "007 0 doc-01 1\n007 0 0042 0\nq2 0 doc-01 2\n"


@pytest.mark.parametrize("name", ["corpus.jsonl", "corpus.jsonl.gz"])
def test_corpus_round_trip_with_title_and_extra_fields(tmp_path, name):
    docs = [Document("d1", "first line\nsecond", "A title"), Document("0002", "no title")]
    write_corpus(tmp_path / name, docs, extra={"d1": {"paragraph_id": "p1"}})
    assert list(read_corpus(tmp_path / name)) == docs
    opener = gzip.open if name.endswith(".gz") else open
    with opener(tmp_path / name, "rt", encoding="utf-8") as handle:
        assert json.loads(handle.readline())["paragraph_id"] == "p1"


def test_corpus_directory_is_read_in_name_order(tmp_path):
    write_corpus(tmp_path / "c" / "b.jsonl", [Document("d2", "two")])
    write_corpus(tmp_path / "c" / "a.jsonl.gz", [Document("d1", "one")])
    assert [d.docid for d in read_corpus(tmp_path / "c")] == ["d1", "d2"]


def test_bitext_round_trip_keeps_tabs_and_newlines_inside_sentences(tmp_path):
    pairs = [
        BitextPair("a\tb", "c\nd", "sw", "en", "p1"),
        BitextPair('quote " and \\ backslash', "ok", "sw", "en", "p2"),
    ]
    write_bitext(tmp_path / "sw-en.train.jsonl.gz", pairs)
    assert read_bitext(tmp_path / "sw-en.train.jsonl.gz") == pairs


def test_bitext_languages_from_arguments_when_name_does_not_say(tmp_path):
    write_bitext(tmp_path / "pairs.jsonl", [BitextPair("x", "y", "ha", "en", "1")])
    with pytest.raises(InputFileError, match="cannot tell the languages"):
        read_bitext(tmp_path / "pairs.jsonl")
    assert read_bitext(tmp_path / "pairs.jsonl", "ha", "en")[0].source_lang == "ha"


def test_gzip_output_is_byte_identical_across_writes(tmp_path):
    pairs = [BitextPair("x", "y", "sw", "en", "1")]
    write_bitext(tmp_path / "a" / "sw-en.jsonl.gz", pairs)
    write_bitext(tmp_path / "b" / "sw-en.jsonl.gz", pairs)
    assert (tmp_path / "a" / "sw-en.jsonl.gz").read_bytes() == (tmp_path / "b" / "sw-en.jsonl.gz").read_bytes()


# --- TREC topics ---------------------------------------------------------------------------------

TREC = """<top>
<num> Number: 301
<title> International Organized
Crime

<desc> Description:
Identify organizations that participate in international criminal activity.

<narr> Narrative:
A relevant document must name the organization.
</top>

<top>
<num>C041</num><title>Pesticides in baby food</title>
<desc>Find reports on pesticides.</desc>
</top>
"""


def test_trec_topics_detected_by_content_not_name(tmp_path):
    path = _write(tmp_path / "topics.tsv", TREC)  # a misleading extension on purpose
    assert read_topics(path, "en") == [
        Topic("301", "International Organized Crime", "en"),
        Topic("C041", "Pesticides in baby food", "en"),
    ]


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("<top>\n<title> no number\n</top>\n", 1, "without a <num>"),
        ("<top>\n<num> Number: 7\n<desc> only a description\n</top>\n", 1, "without a <title>"),
        ("<top>\n<num> Number: 7\n<title>\n<desc> d\n</top>\n", 1, "empty query text"),
        ("<top>\n<num> 1\n<title> a\n</top>\n<top>\n<num> 1\n<title> b\n</top>\n", 5, "duplicate qid '1'"),
        ("<top>\n<num> 1\n<title> a\n", 1, "never closed"),
        ("<top>\n<num> 1\n<title> a\n</top>\nstray text\n", 5, "outside a <top>"),
    ],
)
def test_bad_trec_topics_are_located(tmp_path, text, line, message):
    error = _error(read_topics, _write(tmp_path / "t.trec", text), "en")
    assert error.line == line and message in error.message


# --- malformed lines, one test per kind ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("q1\thello\nq2 no tab here\n", 2, "2 tab-separated fields"),
        ("q1\thello\nq2\tone\ttwo\n", 2, "got 3"),
        ("q1\thello\nq2\t   \n", 2, "empty query text for qid 'q2'"),
        ("q1\thello\n\tno qid\n", 2, "empty qid"),
        ("q1\thello\nq2\tbye\nq1\tagain\n", 3, "duplicate qid 'q1' (first on line 1)"),
    ],
)
def test_bad_tsv_topics_are_located(tmp_path, text, line, message):
    path = _write(tmp_path / "sw.tsv", text)
    error = _error(read_topics, path, "sw")
    assert (error.path, error.line) == (str(path), line)
    assert message in error.message
    assert str(error).startswith(f"{path}:{line}: ")


def test_empty_topics_file_is_an_error(tmp_path):
    assert "no topics" in _error(read_topics, _write(tmp_path / "sw.tsv", "\n\n"), "sw").message


def test_bom_is_not_part_of_the_first_qid(tmp_path):
    path = _write(tmp_path / "sw.tsv", "\ufeffq1\thello\n")
    assert read_topics(path, "sw")[0].qid == "q1"


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("q1 0 d1 1\nq1 0 d2\n", 2, "4 fields"),
        ("q1 0 d1 1\nq1 0 d2 yes\n", 2, "not an integer"),
        ("q1 0 d1 1\nq1 0 d1 0\n", 2, "twice (first on line 1)"),
    ],
)
def test_bad_qrels_are_located(tmp_path, text, line, message):
    error = _error(read_qrels, _write(tmp_path / "x.qrels", text))
    assert error.line == line and message in error.message


def test_qrels_accept_tabs_and_runs_of_spaces(tmp_path):
    path = _write(tmp_path / "x.qrels", "q1\t0\td1\t1\nq1   Q0  d2  -1\n")
    assert read_qrels(path) == [Qrel("q1", "d1", 1), Qrel("q1", "d2", -1)]


@pytest.mark.parametrize(
    ("line2", "message"),
    [
        ('{"id": "d2", "contents": "x"', "invalid JSON"),
        ('["d2", "x"]', "expected a JSON object"),
        ('{"contents": "x"}', "missing field 'id'"),
        ('{"id": 2, "contents": "x"}', "'id' must be a string"),
        ('{"id": "d2"}', "missing field 'contents'"),
        ('{"id": "d2", "contents": "x", "title": 5}', "'title' must be a string"),
        ('{"id": "d1", "contents": "again"}', "duplicate document id 'd1' (first at line 1)"),
    ],
)
def test_bad_corpus_lines_are_located(tmp_path, line2, message):
    path = _write(tmp_path / "corpus.jsonl", '{"id": "d1", "contents": "one"}\n' + line2 + "\n")
    error = _error(read_corpus, path)
    assert error.line == 2 and message in error.message


def test_duplicate_docid_across_files_names_both_files(tmp_path):
    write_corpus(tmp_path / "c" / "a.jsonl", [Document("d1", "one")])
    write_corpus(tmp_path / "c" / "b.jsonl", [Document("d1", "two")])
    error = _error(read_corpus, tmp_path / "c")
    assert error.path.endswith("b.jsonl") and "a.jsonl:1" in error.message


@pytest.mark.parametrize(
    ("line2", "message"),
    [
        ('{"id": "2", "source": "", "target": "t"}', "'source' is empty"),
        ('{"id": "2", "source": "s"}', "missing field 'target'"),
        ('{"id": "1", "source": "s", "target": "t"}', "duplicate pair id '1'"),
    ],
)
def test_bad_bitext_lines_are_located(tmp_path, line2, message):
    path = _write(tmp_path / "sw-en.jsonl", '{"id": "1", "source": "s", "target": "t"}\n' + line2 + "\n")
    error = _error(read_bitext, path)
    assert error.line == 2 and message in error.message


@pytest.mark.parametrize(
    ("name", "first", "second", "reader"),
    [
        ("sw.tsv", b"q1\thello\n", b"q2\tcaf\xe9\n", lambda p: read_topics(p, "sw")),
        ("x.qrels", b"q1 0 d1 1\n", b"q1 0 d\xe9 1\n", read_qrels),
        (
            "corpus.jsonl",
            b'{"id": "d1", "contents": "x"}\n',
            b'{"id": "d2", "contents": "caf\xe9"}\n',
            lambda p: list(read_corpus(p)),
        ),
        (
            "sw-en.jsonl",
            b'{"id": "1", "source": "s", "target": "t"}\n',
            b'{"id": "2", "source": "\xe9", "target": "t"}\n',
            read_bitext,
        ),
    ],
)
def test_non_utf8_is_an_error_naming_the_line(tmp_path, name, first, second, reader):
    path = _write(tmp_path / name, first + second)
    with pytest.raises(InputFileError) as info:
        reader(path)
    assert info.value.line == 2 and "UTF-8" in info.value.message


# --- writers refuse what the format cannot hold, and leave nothing behind -------------------------


def test_failed_write_leaves_no_partial_file_and_keeps_the_old_one(tmp_path):
    path = tmp_path / "sw.tsv"
    write_topics(path, [Topic("q0", "old", "sw")])
    with pytest.raises(ValueError, match="tab or line break"):
        write_topics(path, [Topic("q1", "fine", "sw"), Topic("q2", "bad\ttext", "sw")])
    assert read_topics(path, "sw") == [Topic("q0", "old", "sw")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sw.tsv"]


def test_failed_gzip_write_leaves_nothing(tmp_path):
    with pytest.raises(ValueError, match="mixed language pairs"):
        write_bitext(
            tmp_path / "sw-en.jsonl.gz", [BitextPair("a", "b", "sw", "en", "1"), BitextPair("c", "d", "ha", "en", "2")]
        )
    assert list(tmp_path.iterdir()) == []


def test_qrels_writer_refuses_whitespace_in_ids(tmp_path):
    with pytest.raises(ValueError, match="whitespace"):
        write_qrels(tmp_path / "x.qrels", [Qrel("q 1", "d1", 1)])
    assert list(tmp_path.iterdir()) == []
