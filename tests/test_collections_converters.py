"""Converters on tiny source trees written here in the original formats (never ../shared)."""

import json

import pytest
from typer.testing import CliRunner

from clir_eval.cli import app
from clir_eval.collections.bitext import load_bitext
from clir_eval.collections.converters import build_builtin
from clir_eval.collections.converters.lafand_x import docid
from clir_eval.collections.converters.ntrex import LANG_FILES
from clir_eval.collections.leakage import normalize
from clir_eval.collections.converters.xquad_r import LANGUAGES as XQUAD_LANGS
from clir_eval.collections.registry import DATA_ENV, list_collections, load_collection
from clir_eval.io import InputFileError, sha256_tree

BIBTEX_README = "# LAFAND\n\n### BibTeX entry and citation info\n```\n@inproceedings{x,\n  title={T}\n}\n```\n"


def _xquad(root):
    context = "Alpha beta gamma. Delta epsilon zeta. Eta theta."
    breaks = [[0, 17], [18, 37], [38, 48]]
    sentences = [context[a:b] for a, b in breaks]
    for lang in XQUAD_LANGS:
        qas = [
            # answer "epsilon" starts in sentence 1; "gamma. Delta" starts in sentence 0 and runs into 1
            {
                "id": "q-eps",
                "question": f"[{lang}] Which comes after delta?",
                "answers": [{"answer_start": context.index("epsilon"), "text": "epsilon"}],
            },
            {
                "id": "q-gam",
                "question": f"[{lang}]\tWhich\nends the first sentence?",
                "answers": [{"answer_start": context.index("gamma"), "text": "gamma. Delta"}],
            },
        ]
        paragraph = {"context": context, "qas": qas, "sentence_breaks": breaks, "sentences": sentences}
        other = {
            "context": "Iota kappa.",
            "sentence_breaks": [[0, 11]],
            "sentences": ["Iota kappa."],
            "qas": [
                {"id": "q-iota", "question": f"[{lang}] Kappa?", "answers": [{"answer_start": 5, "text": "kappa"}]}
            ],
        }
        data = {
            "version": "1.1",
            "data": [{"title": "Greek", "paragraphs": [paragraph]}, {"title": "More", "paragraphs": [other]}],
        }
        (root / "xquad-r" / "xquad-r").mkdir(parents=True, exist_ok=True)
        (root / "xquad-r" / "xquad-r" / f"{lang}.json").write_text(json.dumps(data, ensure_ascii=False), "utf-8")
    (root / "xquad-r" / "LICENSE").write_text("CC BY-SA 4.0\n")


def _ntrex(root, doc_ids=None):
    doc_ids = doc_ids or ["news.1"] * 3 + ["news.2"] * 2 + [f"news.{i}" for i in range(3, 11)]
    folder = root / "ntrex" / "NTREX-128"
    folder.mkdir(parents=True, exist_ok=True)
    (root / "ntrex" / "DOCUMENT_IDS.tsv").write_bytes("".join(f"{d}\r\n" for d in doc_ids).encode())
    for lang, name in LANG_FILES.items():
        lines = [f"{lang} sentence {i} of {d}" for i, d in enumerate(doc_ids, start=1)]
        (folder / name).write_bytes("".join(f"{line}\r\n" for line in lines).encode())
    (root / "ntrex" / "LICENSE.md").write_text("CC BY-SA 4.0\n")


def _lafand(root):
    base = root / "lafand"
    for folder, code, splits in (
        ("en-swa", "swa", ("train", "dev", "test")),
        ("en-amh", "amh", ("dev",)),
        ("fr-bam", "bam", ("train",)),
    ):
        (base / folder).mkdir(parents=True, exist_ok=True)
        pivot = "fr" if folder.startswith("fr") else "en"
        for split in splits:
            (base / folder / f"{split}.{pivot}").write_text(f"Hello {split}\nGood morning\tfriend\n", "utf-8")
            (base / folder / f"{split}.{code}").write_text(f"Jambo {split}\nHabari ya asubuhi\n", "utf-8")
    (base / "LICENSE").write_text("GPL-3.0 (code)\n")
    (base / "SOURCE_README.md").write_text(BIBTEX_README)


@pytest.fixture()
def sources(tmp_path):
    root = tmp_path / "src"
    _xquad(root)
    _ntrex(root)
    _lafand(root)
    return root


def test_build_is_deterministic_and_loads_through_the_registry(sources, tmp_path, monkeypatch):
    first, second = tmp_path / "a", tmp_path / "b"
    build_builtin(sources, first)
    build_builtin(sources, second)
    for folder in ("collections", "topics", "qrels"):
        assert sha256_tree(first / folder) == sha256_tree(second / folder)
    monkeypatch.setenv(DATA_ENV, str(first))
    assert list_collections() == ["lafand-x", "ntrex", "xquad-r"]
    for name in list_collections():
        load_collection(name)  # validates: no errors


def test_xquad_relevant_sentence_holds_the_answer_start(sources, tmp_path, monkeypatch):
    counts = build_builtin(sources, tmp_path / "out")
    assert counts["xquad-r"]["answers_crossing_sentences"] == 1
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "out"))
    xquad = load_collection("xquad-r")
    relevant = {q.qid: q.docid for q in xquad.qrels()}
    assert relevant == {"q-eps": "xqr-a00-p00-s01", "q-gam": "xqr-a00-p00-s00", "q-iota": "xqr-a01-p00-s00"}
    docs = {d.docid: d.contents for d in xquad.documents()}
    assert docs["xqr-a00-p00-s01"] == "Delta epsilon zeta." and len(docs) == 4
    line = json.loads((xquad.corpus_path).read_text().splitlines()[1])
    assert line["paragraph_id"] == "xqr-a00-p00" and line["article"] == "Greek"
    # tabs and line breaks inside a question become one space in the TSV
    assert {t.qid: t.text for t in xquad.topics("zh")}["q-gam"] == "[zh] Which ends the first sentence?"


def test_ntrex_documents_split_and_crlf(sources, tmp_path, monkeypatch):
    counts = build_builtin(sources, tmp_path / "out")["ntrex"]
    assert counts["documents"] == 10 and counts["dev_documents"] == 3 and counts["test_documents"] == 7
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "out"))
    ntrex = load_collection("ntrex")
    docs = {d.docid: d.contents for d in ntrex.documents()}
    assert docs["news.1"] == "en sentence 1 of news.1\nen sentence 2 of news.1\nen sentence 3 of news.1"
    relevant = {q.qid: q.docid for split in ntrex.splits for q in ntrex.qrels(split)}
    assert relevant["ntrex-0004"] == "news.2"
    sw = {t.qid: t.text for split in ntrex.splits for t in ntrex.topics("sw", split)}
    assert sw["ntrex-0004"] == "sw sentence 4 of news.2"  # no stray \r
    pairs = load_bitext("ntrex", "sw", "dev")
    assert {relevant[p.pair_id] for p in pairs} == {d for d in docs if d in {q.docid for q in ntrex.qrels("dev")}}


def test_ntrex_non_contiguous_document_is_refused_and_old_output_kept(sources, tmp_path):
    out = tmp_path / "out"
    build_builtin(sources, out)
    before = sha256_tree(out / "collections" / "ntrex")
    _ntrex(sources, doc_ids=["a", "a", "b", "a"])
    with pytest.raises(InputFileError) as info:
        build_builtin(sources, out)
    assert info.value.path.endswith("DOCUMENT_IDS.tsv") and info.value.line == 4
    assert sha256_tree(out / "collections" / "ntrex") == before
    assert not [p for p in (out / "collections").iterdir() if p.name.startswith(".")]


def test_lafand_codes_splits_and_skipped_pairs(sources, tmp_path, monkeypatch):
    counts = build_builtin(sources, tmp_path / "out")["lafand"]
    assert counts == {
        "am": {"dev": {"pairs": 2, "duplicate_pairs": 0}},
        "sw": {"train": {"pairs": 2, "duplicate_pairs": 0}, "dev": {"pairs": 2, "duplicate_pairs": 0}},
    }
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "out"))
    pairs = load_bitext("lafand", "sw", "train")
    assert [(p.source, p.target) for p in pairs] == [
        ("Jambo train", "Hello train"),
        ("Habari ya asubuhi", "Good morning friend"),
    ]
    assert pairs[0].pair_id == "lafand-sw-train-000001"


def test_lafand_unknown_language_folder_is_an_error(sources, tmp_path):
    (sources / "lafand" / "en-xyz").mkdir()
    with pytest.raises(InputFileError, match="without a language mapping: en-xyz"):
        build_builtin(sources, tmp_path / "out")


def test_cli_build_reports_missing_sources_with_exit_2(tmp_path):
    result = CliRunner().invoke(app, ["collections", "build", "--source", str(tmp_path), "--dest", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "missing source folder(s): xquad-r, ntrex, lafand" in result.output


def test_lafand_x_queries_corpus_and_relevance(sources, tmp_path, monkeypatch):
    # sw test line 1 repeats sw train line 1's English in another case; am dev line 2 repeats sw train line 2's
    base = sources / "lafand"
    (base / "en-swa" / "test.en").write_text("HELLO   train\nA sentence only in test\n", "utf-8")
    (base / "en-amh" / "dev.en").write_text("Amharic dev one\nGood morning friend\n", "utf-8")
    counts = build_builtin(sources, tmp_path / "out")["lafand-x"]
    # English lines: sw train 2, dev 2, test 2; am dev 2 = 8; distinct after normalisation: 5
    assert counts["english_lines"] == 8 and counts["documents"] == 5
    assert counts["queries"] == {"dev": {"am": 2, "sw": 2}, "test": {"sw": 2}}
    overlaps = counts["overlaps"]["by_language"]
    assert overlaps["sw"]["test_english_in_own_train"] == 1 and overlaps["am"]["dev_english_in_any_train"] == 1
    assert counts["overlaps"]["english_sentences_in_more_than_one_language"] == 1  # "Good morning friend"
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "out"))
    lafand_x = load_collection("lafand-x")  # validates
    docs = {d.docid: d.contents for d in lafand_x.documents()}
    assert "Hello train" in docs.values() and "HELLO   train" not in docs.values()  # first form kept
    relevant = {q.qid: q.docid for q in lafand_x.qrels("test")}
    assert docs[relevant["lafand-sw-test-000001"]] == "Hello train"  # relevant = the same text after normalisation
    assert {t.qid: t.text for t in lafand_x.topics("sw", "test")}["lafand-sw-test-000001"] == "Jambo test"
    assert {t.qid: t.text for t in lafand_x.topics("en", "dev")}["lafand-am-dev-000002"] == "Good morning friend"
    assert relevant["lafand-sw-test-000001"] == docid(normalize("Hello train"))  # content-hash ids
    assert [q.qid for q in lafand_x.qrels("dev", "am")] == ["lafand-am-dev-000001", "lafand-am-dev-000002"]
