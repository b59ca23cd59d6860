"""The committed built-in collections: counts from the sources' own documentation, splits, bitext."""

import pytest

from clir_eval.collections.bitext import bitext_languages, list_bitext_sources, load_bitext
from clir_eval.collections.registry import DATA_ENV, data_root, list_collections, load_collection
from clir_eval.collections.validation import validate_collection

XQUAD_LANGS = ("ar", "de", "el", "en", "es", "hi", "ru", "th", "tr", "vi", "zh")
NTREX_LOW = ("am", "fil", "ha", "hi", "mr", "so", "sw", "yo")
NTREX_HIGH = ("de", "es", "fr", "ru", "zh")


@pytest.fixture(scope="module")
def xquad():
    return load_collection("xquad-r", validate=False)


@pytest.fixture(scope="module")
def ntrex():
    return load_collection("ntrex", validate=False)


def test_builtins_are_listed_and_valid_without_warnings():
    assert {"xquad-r", "ntrex", "lafand-x"} <= set(list_collections())
    for name in ("xquad-r", "ntrex", "lafand-x"):
        report = validate_collection(load_collection(name, validate=False), strict=True)
        assert report.ok, report.errors


def test_xquad_r_counts_match_the_lareqa_readme(xquad):
    # README table: 1,190 questions per language; 1,180 English candidate sentences.
    assert xquad.languages == XQUAD_LANGS
    assert xquad.splits == ("test",)
    qid_sets = {lang: [t.qid for t in xquad.topics(lang)] for lang in XQUAD_LANGS}
    assert all(len(qids) == 1190 for qids in qid_sets.values())
    assert len({frozenset(q) for q in qid_sets.values()}) == 1
    docs = list(xquad.documents())
    assert len(docs) == 1180
    qrels = xquad.qrels()
    assert len(qrels) == 1190 and {q.relevance for q in qrels} == {1}
    assert {q.qid for q in qrels} == set(qid_sets["en"])
    assert {q.docid for q in qrels} <= {d.docid for d in docs}
    assert xquad.oracle_lang == "en" and xquad.language_group("hi") == "low"


def test_xquad_r_topics_differ_across_languages(xquad):
    en = {t.qid: t.text for t in xquad.topics("en")}
    de = {t.qid: t.text for t in xquad.topics("de")}
    assert sum(en[q] == de[q] for q in en) < 10  # translations, not copies


def test_ntrex_split_by_document_is_disjoint_and_covers_every_sentence(ntrex):
    assert ntrex.splits == ("dev", "test")
    docs = [d.docid for d in ntrex.documents()]
    assert len(docs) == 123
    qrels = {split: ntrex.qrels(split) for split in ntrex.splits}
    docs_of = {split: {q.docid for q in qrels[split]} for split in ntrex.splits}
    qids_of = {split: {q.qid for q in qrels[split]} for split in ntrex.splits}
    assert not docs_of["dev"] & docs_of["test"]
    assert docs_of["dev"] | docs_of["test"] == set(docs)
    assert not qids_of["dev"] & qids_of["test"]
    assert len(qids_of["dev"]) + len(qids_of["test"]) == 1997
    assert len(docs_of["dev"]) == round(0.3 * 123)
    for split in ntrex.splits:
        assert len(qrels[split]) == len(qids_of[split])  # one relevant document per query
        for lang in ntrex.languages_in(split):
            assert {t.qid for t in ntrex.topics(lang, split)} == qids_of[split]


def test_ntrex_split_file_agrees_with_qrels(ntrex):
    rows = (ntrex.root / "split.tsv").read_text(encoding="utf-8").splitlines()
    assert rows[0] == "docid\tsplit"
    recorded = dict(line.split("\t") for line in rows[1:])
    for split in ntrex.splits:
        assert {q.docid for q in ntrex.qrels(split)} == {d for d, s in recorded.items() if s == split}


def test_ntrex_oracle_sentence_is_inside_its_relevant_document(ntrex):
    contents = {d.docid: d.contents.split("\n") for d in ntrex.documents()}
    for split in ntrex.splits:
        relevant = {q.qid: q.docid for q in ntrex.qrels(split)}
        for topic in ntrex.topics("en", split):
            assert topic.text in contents[relevant[topic.qid]]


def test_ntrex_languages_and_groups(ntrex):
    assert set(ntrex.languages) == set(NTREX_LOW) | set(NTREX_HIGH) | {"en"}
    assert all(ntrex.language_group(lang) == "low" for lang in NTREX_LOW)
    assert all(ntrex.language_group(lang) == "high" for lang in NTREX_HIGH)
    assert ntrex.language_group("en") == "oracle"


def test_lafand_bitext_loads_with_iso_codes():
    assert {"lafand", "ntrex"} <= set(list_bitext_sources())
    langs = bitext_languages("lafand")
    assert {"sw", "ha", "yo"} <= set(langs) and "swa" not in langs
    assert langs["sw"] == ("train", "dev") and langs["am"] == ("dev",)
    pairs = load_bitext("lafand", "sw", "train")
    assert len(pairs) == 30782  # LAFAND README / data README: sw 30,782 train pairs
    assert {(p.source_lang, p.target_lang) for p in pairs} == {("sw", "en")}
    assert len({p.pair_id for p in pairs}) == len(pairs)
    with pytest.raises(KeyError, match="no 'train' split"):
        load_bitext("lafand", "am", "train")
    with pytest.raises(KeyError, match="no bitext for 'fr'"):
        load_bitext("lafand", "fr", "dev")


def test_ntrex_bitext_is_dev_only_and_aligned_by_qid(ntrex):
    pairs = load_bitext("ntrex", "sw", "dev")
    english = {t.qid: t.text for t in ntrex.topics("en", "dev")}
    assert len(pairs) == len(english)
    assert all(p.target == english[p.pair_id] for p in pairs)
    assert {p.pair_id for p in pairs}.isdisjoint({q.qid for q in ntrex.qrels("test")})
    with pytest.raises(ValueError, match="only \\['dev'\\]"):
        load_bitext("ntrex", "sw", "test")
    with pytest.raises(KeyError, match="unknown bitext source"):
        load_bitext("nope", "sw", "dev")


def test_data_root_is_overridable(tmp_path, monkeypatch):
    assert (data_root() / "collections" / "ntrex" / "collection.yaml").is_file()
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    assert data_root() == tmp_path.resolve()
    assert list_collections() == []


def test_collection_pickles_for_worker_processes(ntrex):
    import pickle

    assert pickle.loads(pickle.dumps(ntrex)) == ntrex


def test_cli_lists_every_builtin_split_and_language():
    from typer.testing import CliRunner

    from clir_eval.cli import app

    result = CliRunner().invoke(app, ["collections", "list"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if "│ ntrex" in line or "│ xquad-r" in line]
    assert len(rows) == 2 * 14 + 11
    assert any("xquad-r" in r and "│ hi " in r and "low" in r and "1,190" in r and "1,180" in r for r in rows)
    lafand_x = [line for line in result.output.splitlines() if "│ lafand-x" in line]
    assert len(lafand_x) == 2 * 15  # dev and test, 14 languages and the English oracle
    assert any("│ test" in r and "│ sw " in r and "1,835" in r and "94,218" in r for r in lafand_x)


LAFAND_TEST = {"am": 1037, "ha": 1500, "ig": 1500, "lg": 1500, "ny": 1004, "pcm": 1564, "rw": 1006, "sn": 1005,
               "sw": 1835, "tn": 1500, "tw": 1500, "xh": 1002, "yo": 1558, "zu": 998}
LAFAND_DEV = {"am": 899, "ha": 1300, "ig": 1500, "lg": 1500, "ny": 483, "pcm": 1484, "rw": 460, "sn": 556,
              "sw": 1791, "tn": 1342, "tw": 1284, "xh": 486, "yo": 1544, "zu": 1239}


def test_lafand_x_loads_by_name_with_its_counts():
    # Line counts of LAFAND's test.<xxx> / dev.<xxx> files; 94,218 distinct English sentences of the 99,701 lines
    # of every en-xx file (train, dev and test), after NFKC + casefold + whitespace normalisation.
    lafand_x = load_collection("lafand-x")
    assert lafand_x.splits == ("dev", "test") and lafand_x.oracle_lang == "en" and not lafand_x.parallel_topics
    assert lafand_x.licence.startswith("CC BY-NC 4.0") and "A Few Thousand Translations" in lafand_x.citation
    docs = {d.docid: d.contents for d in lafand_x.documents()}
    assert len(docs) == 94_218 and len(docs) >= 90_000
    for split, counts in (("test", LAFAND_TEST), ("dev", LAFAND_DEV)):
        assert lafand_x.languages_in(split) == tuple(sorted([*counts, "en"]))
        english = {t.qid: t.text for t in lafand_x.topics("en", split)}
        qrels = lafand_x.qrels(split)
        relevant = {q.qid: q.docid for q in qrels}
        assert len(relevant) == len(qrels) == len(english) == sum(counts.values())  # one relevant document each
        for lang, count in counts.items():
            topics = lafand_x.topics(lang, split)
            assert len(topics) == count and lafand_x.language_group(lang) == "low"
            assert len(lafand_x.qrels(split, lang)) == count
            # the relevant document is the query's own English translation
            assert all(" ".join(docs[relevant[t.qid]].casefold().split()) == " ".join(english[t.qid].casefold().split())
                       for t in topics[:50])
