"""Bring-your-own collections: conventional layout, collection.yaml, validation and the CLI's exit codes."""

import pytest
from typer.testing import CliRunner

from clir_eval.cli import app
from clir_eval.collections.records import Document, Qrel, Topic
from clir_eval.collections.registry import load_collection
from clir_eval.collections.validation import CollectionValidationError, validate_collection
from clir_eval.collections.writers import write_corpus, write_qrels, write_topics
from clir_eval.io import InputFileError

TREC_EN = (
    "<top>\n<num> Number: q1\n<title> oil prices\n</top>\n<top>\n<num> Number: q2\n<title> rain in Nairobi\n</top>\n"
)


def _byo(root, qrels=None, corpus=None):
    """A tiny collection in the conventional layout: English TREC topics, Swahili TSV topics."""
    write_corpus(root / "corpus.jsonl", corpus or [Document("d1", "oil prices rose"), Document("d2", "heavy rain")])
    write_qrels(root / "qrels.txt", qrels or [Qrel("q1", "d1", 1), Qrel("q2", "d2", 1)])
    (root / "topics").mkdir(parents=True, exist_ok=True)
    (root / "topics" / "en.trec").write_text(TREC_EN, encoding="utf-8")
    write_topics(root / "topics" / "sw.tsv", [Topic("q1", "bei ya mafuta", "sw"), Topic("q2", "mvua Nairobi", "sw")])
    return root


def test_conventional_layout_loads_with_trec_and_tsv_topics(tmp_path):
    collection = load_collection(_byo(tmp_path / "mine"))
    assert collection.name == "mine"
    assert collection.splits == ("test",)
    assert collection.languages == ("en", "sw")
    assert collection.oracle_lang == "en"
    assert collection.language_group("en") == "oracle"
    assert collection.language_group("sw") == "unspecified"
    assert [t.text for t in collection.topics("en")] == ["oil prices", "rain in Nairobi"]
    assert [d.docid for d in collection.documents()] == ["d1", "d2"]
    assert collection.qrels() == [Qrel("q1", "d1", 1), Qrel("q2", "d2", 1)]


def test_per_split_layout(tmp_path):
    root = tmp_path / "c"
    write_corpus(root / "corpus.jsonl.gz", [Document("d1", "x"), Document("d2", "y")])
    for split, qid, doc in (("dev", "q1", "d1"), ("test", "q2", "d2")):
        write_qrels(root / f"{split}.qrels", [Qrel(qid, doc, 1)])
        write_topics(root / "topics" / split / "ha.tsv", [Topic(qid, "text", "ha")])
    collection = load_collection(root)
    assert collection.splits == ("dev", "test")
    assert [t.qid for t in collection.topics("ha", "dev")] == ["q1"]
    with pytest.raises(KeyError, match="no split 'train'"):
        collection.topics("ha", "train")


def test_manifest_with_groups_and_unknown_language(tmp_path):
    root = _byo(tmp_path / "c")
    (root / "collection.yaml").write_text(
        "name: tiny\ncorpus: corpus.jsonl\noracle_lang: en\ngroups:\n  low: [sw]\n"
        "splits:\n  test:\n    qrels: qrels.txt\n    topics:\n      en: topics/en.trec\n      sw: topics/sw.tsv\n",
        encoding="utf-8",
    )
    collection = load_collection(root)
    assert collection.name == "tiny" and collection.language_group("sw") == "low"
    with pytest.raises(KeyError, match="no topics in 'yo'"):
        collection.language_group("yo")


@pytest.mark.parametrize(
    ("manifest", "line", "message"),
    [
        ("corpus: corpus.jsonl\ncorpsu: x\n", 2, "unknown key 'corpsu'"),
        ("corpus: corpus.jsonl\nsplits:\n  test:\n    qrels: qrels.txt\n    topic: {}\n", 5, "unknown key 'topic'"),
        (
            "corpus: missing.jsonl\nsplits:\n  test:\n    qrels: qrels.txt\n    topics: {en: topics/en.trec}\n",
            1,
            "does not exist",
        ),
        (
            "corpus: corpus.jsonl\ngroups:\n  mid: [sw]\nsplits:\n  test:\n    qrels: qrels.txt\n"
            "    topics: {sw: topics/sw.tsv}\n",
            3,
            "unknown group 'mid'",
        ),
        ("corpus: corpus.jsonl\nsplits: {a: [}\nname: x\n", 2, "invalid YAML"),
    ],
)
def test_bad_manifest_names_file_key_and_line(tmp_path, manifest, line, message):
    root = _byo(tmp_path / "c")
    (root / "collection.yaml").write_text(manifest, encoding="utf-8")
    with pytest.raises(InputFileError) as info:
        load_collection(root)
    assert info.value.path.endswith("collection.yaml")
    assert message in info.value.message
    assert info.value.line == line


def test_malformed_topic_line_fails_on_load_with_file_and_line(tmp_path):
    root = _byo(tmp_path / "c")
    (root / "topics" / "sw.tsv").write_text("q1\tbei\nq2\n", encoding="utf-8")
    with pytest.raises(CollectionValidationError) as info:
        load_collection(root)
    assert any(
        e.endswith("sw.tsv:2: expected 'qid<TAB>text' (2 tab-separated fields), got 1") for e in info.value.errors
    )


def test_duplicate_docid_is_an_error(tmp_path):
    root = _byo(tmp_path / "c", corpus=[Document("d1", "a"), Document("d2", "b"), Document("d1", "c")])
    report = validate_collection(load_collection(root, validate=False))
    assert not report.ok
    assert any("corpus.jsonl:3: duplicate document id 'd1' (first at line 1)" in e for e in report.errors)


def test_relevant_docid_missing_from_corpus_is_an_error_with_count_and_examples(tmp_path):
    qrels = [Qrel("q1", "d1", 1), Qrel("q2", "gone-1", 1), Qrel("q2", "gone-2", 2), Qrel("q2", "d2", 1)]
    report = validate_collection(load_collection(_byo(tmp_path / "c", qrels=qrels), validate=False))
    assert len(report.errors) == 1
    assert "2 relevant docid(s) not in the corpus" in report.errors[0]
    assert "'gone-1', 'gone-2'" in report.errors[0]


def test_nonrelevant_missing_docid_and_unknown_qid_are_warnings(tmp_path):
    qrels = [Qrel("q1", "d1", 1), Qrel("q2", "d2", 1), Qrel("q2", "unjudged-doc", 0), Qrel("q9", "d1", 1)]
    root = _byo(tmp_path / "c", qrels=qrels)
    report = validate_collection(load_collection(root, validate=False))
    assert report.ok
    assert any("1 non-relevant docid(s) not in the corpus: 'unjudged-doc'" in w for w in report.warnings)
    assert any("1 qrels qid(s) of split 'test' have no topic in 'sw': 'q9'" in w for w in report.warnings)
    strict = validate_collection(load_collection(root, validate=False), strict=True)
    assert not strict.ok and not strict.warnings


def test_topic_without_relevant_judgement_is_a_warning(tmp_path):
    report = validate_collection(load_collection(_byo(tmp_path / "c", qrels=[Qrel("q1", "d1", 1)]), validate=False))
    assert report.ok
    assert any("1 topic(s) have no relevant judgement" in w and "'q2'" in w for w in report.warnings)


def test_layout_errors_are_clear(tmp_path):
    root = _byo(tmp_path / "c")
    write_qrels(root / "dev.qrels", [Qrel("q1", "d1", 1)])
    with pytest.raises(InputFileError, match="both qrels.txt and \\*.qrels"):
        load_collection(root)
    (root / "topics" / "Swahili topics.tsv").write_text("q\tx\n")
    (root / "dev.qrels").unlink()
    with pytest.raises(InputFileError, match="named <lang>.<ext>"):
        load_collection(root)


def test_unknown_name_lists_builtins(tmp_path):
    with pytest.raises(KeyError, match="neither a built-in collection"):
        load_collection(str(tmp_path / "nope"))


# --- CLI ---------------------------------------------------------------------------------------


def test_cli_validate_ok_and_errors_exit_2_without_traceback(tmp_path):
    runner = CliRunner()
    root = _byo(tmp_path / "c")
    ok = runner.invoke(app, ["collections", "validate", str(root)])
    assert ok.exit_code == 0, ok.output
    assert "ok:" in ok.output and "2 documents" in ok.output

    (root / "topics" / "sw.tsv").write_text("q1\tbei\nq2\t \n", encoding="utf-8")
    bad = runner.invoke(app, ["collections", "validate", str(root)])
    assert bad.exit_code == 2
    assert "sw.tsv:2: empty query text for qid 'q2'" in bad.output
    assert "Traceback" not in bad.output and bad.exception is None or isinstance(bad.exception, SystemExit)


def test_cli_validate_strict_fails_on_warnings(tmp_path):
    root = _byo(tmp_path / "c", qrels=[Qrel("q1", "d1", 1)])
    runner = CliRunner()
    assert runner.invoke(app, ["collections", "validate", str(root)]).exit_code == 0
    strict = runner.invoke(app, ["collections", "validate", "--strict", str(root)])
    assert strict.exit_code == 2 and "no relevant judgement" in strict.output


def test_cli_list_accepts_a_user_directory(tmp_path):
    result = CliRunner().invoke(app, ["collections", "list", str(_byo(tmp_path / "mine"))])
    assert result.exit_code == 0, result.output
    assert "mine" in result.output and "oracle" in result.output and "unspecified" in result.output


def test_cli_bad_manifest_is_one_line_exit_2(tmp_path):
    root = _byo(tmp_path / "c")
    (root / "collection.yaml").write_text("corpus: corpus.jsonl\nsplitz: {}\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["collections", "validate", str(root)])
    assert result.exit_code == 2
    assert "collection.yaml:2: unknown key 'splitz'" in result.output


def test_validation_is_remembered_until_a_file_changes(tmp_path, monkeypatch):
    """A million-document corpus is parsed for validation once, not by every command; an edit is seen again."""
    from clir_eval.collections import registry

    monkeypatch.setenv("CLIR_EVAL_CACHE", str(tmp_path / "cache"))
    root = _byo(tmp_path / "mine")
    reads = []
    original = registry.read_corpus
    monkeypatch.setattr(registry, "read_corpus", lambda path: reads.append(path) or original(path))
    load_collection(root)
    load_collection(root)
    assert len(reads) == 1
    write_qrels(root / "qrels.txt", [Qrel("q1", "d9", 1), Qrel("q2", "d2", 1)])  # now a relevant doc is missing
    with pytest.raises(CollectionValidationError, match="d9"):
        load_collection(root)


def _per_language(root):
    """Each language its own queries (parallel_topics: false): sw asks q1, q2; ha asks q3; en holds all three."""
    write_corpus(root / "corpus.jsonl", [Document("d1", "oil prices rose"), Document("d2", "heavy rain"),
                                         Document("d3", "football match won")])
    write_qrels(root / "test.qrels", [Qrel("q1", "d1", 1), Qrel("q2", "d2", 1), Qrel("q3", "d3", 1)])
    write_topics(root / "sw.tsv", [Topic("q1", "bei ya mafuta", "sw"), Topic("q2", "mvua kubwa", "sw")])
    write_topics(root / "ha.tsv", [Topic("q3", "wasan kwallon kafa", "ha")])
    write_topics(root / "en.tsv", [Topic("q1", "oil prices", "en"), Topic("q2", "heavy rain", "en"),
                                   Topic("q3", "football match", "en")])
    (root / "collection.yaml").write_text(
        "corpus: corpus.jsonl\noracle_lang: en\nparallel_topics: false\n"
        "splits:\n  test:\n    qrels: test.qrels\n    topics: {en: en.tsv, sw: sw.tsv, ha: ha.tsv}\n", encoding="utf-8")
    return root


def test_per_language_queries_are_valid_and_each_language_gets_its_own_judgements(tmp_path):
    collection = load_collection(_per_language(tmp_path / "mine"))
    assert validate_collection(collection, strict=True).ok  # no "qid without a topic in sw" warnings
    assert [q.qid for q in collection.qrels("test", "sw")] == ["q1", "q2"]
    assert [q.qid for q in collection.qrels("test", "ha")] == ["q3"]
    assert len(collection.qrels("test", "en")) == len(collection.qrels("test")) == 3


def test_per_language_queries_still_warn_about_a_judgement_no_language_asks(tmp_path):
    root = _per_language(tmp_path / "mine")
    write_qrels(root / "test.qrels", [Qrel("q1", "d1", 1), Qrel("q2", "d2", 1), Qrel("q3", "d3", 1),
                                      Qrel("q9", "d3", 1)])
    report = validate_collection(load_collection(root, validate=False))
    assert any("1 qrels qid(s) of split 'test' have no topic in any query language: 'q9'" in w
               for w in report.warnings), report.warnings


def test_parallel_topics_must_be_a_boolean(tmp_path):
    root = _per_language(tmp_path / "mine")
    text = (root / "collection.yaml").read_text(encoding="utf-8").replace("parallel_topics: false", "parallel_topics: no-way")
    (root / "collection.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(InputFileError, match=r"collection.yaml:3: parallel_topics: expected true or false"):
        load_collection(root)
