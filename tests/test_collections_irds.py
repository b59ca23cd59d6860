"""irds:<id> collections through ir_datasets' own registry (a dataset registered from local files, no mock):
converted once, and the same runs, scores and study as the same data given as a bring-your-own directory."""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clir_eval.cli import app
from clir_eval.collections.registry import load_collection

sys.path.insert(0, str(Path(__file__).parent))
from test_retrieval_systems import ENGLISH_DOCS, RELEVANT, TOPICS  # noqa: E402

ir_datasets = pytest.importorskip("ir_datasets")


def _register(files: Path, langs: tuple[str, ...]) -> list[str]:
    """Register one ir_datasets Dataset per query language over shared local docs and qrels; return the ids."""
    from ir_datasets.datasets.base import Dataset
    from ir_datasets.formats import TrecQrels, TsvDocs, TsvQueries
    from ir_datasets.util import LocalDownload

    docs = TsvDocs(LocalDownload(files / "docs.tsv"), lang="en")
    qrels = TrecQrels(LocalDownload(files / "qrels.txt"), {0: "not relevant", 1: "relevant"})
    base = f"clir-eval-test/{uuid.uuid4().hex[:8]}"
    ids = []
    for lang in langs:
        dataset_id = f"{base}/{lang}"
        ir_datasets.registry.register(dataset_id, Dataset(docs, TsvQueries(LocalDownload(files / f"{lang}.tsv"),
                                                                            lang=lang), qrels))
        ids.append(dataset_id)
    return ids


@pytest.fixture()
def world(tmp_path, monkeypatch):
    """The same tiny collection as local ir_datasets files (registered) and as a bring-your-own directory."""
    monkeypatch.setenv("CLIR_EVAL_CACHE", str(tmp_path / "cache"))
    files = tmp_path / "irds-files"
    files.mkdir()
    (files / "docs.tsv").write_text("".join(f"{d}\t{t}\n" for d, t in ENGLISH_DOCS.items()), encoding="utf-8")
    # q4 judged twice (one non-relevant) so relevance levels survive the conversion
    qrels = "".join(f"{q} 0 {d} 1\n" for q, d in RELEVANT.items()) + "q4 0 d05 0\n"
    (files / "qrels.txt").write_text(qrels, encoding="utf-8")
    byo = tmp_path / "byo"
    (byo / "topics").mkdir(parents=True)
    (byo / "corpus.jsonl").write_text(
        "".join(json.dumps({"id": d, "contents": t}) + "\n" for d, t in ENGLISH_DOCS.items()), encoding="utf-8")
    (byo / "qrels.txt").write_text(qrels, encoding="utf-8")
    for i, lang in enumerate(("en", "sw")):
        text = "".join(f"{q}\t{t[i]}\n" for q, t in TOPICS.items())
        (files / f"{lang}.tsv").write_text(text, encoding="utf-8")
        (byo / "topics" / f"{lang}.tsv").write_text(text, encoding="utf-8")
    ids = _register(files, ("sw", "en"))
    return {"name": "irds:" + "+".join(ids), "ids": ids, "byo": byo, "tmp": tmp_path}


def test_an_irds_id_converts_once_into_the_collection_format(world):
    collection = load_collection(world["name"])
    byo = load_collection(world["byo"])
    assert collection.name.startswith("irds-clir-eval-test_") and "/" not in collection.name
    assert collection.root.is_relative_to(world["tmp"] / "cache")
    assert collection.languages == ("en", "sw") and collection.oracle_lang == "en"
    assert collection.splits == ("test",)
    for lang in ("sw", "en"):
        assert collection.topics(lang) == byo.topics(lang)
    assert sorted(collection.qrels()) == sorted(byo.qrels())
    assert list(collection.documents()) == list(byo.documents())
    assert "clir-eval-test" in collection.source and collection.licence
    # converted once: a second load reads the cache, even with the local files gone
    corpus = collection.corpus_path
    before = corpus.stat().st_mtime_ns
    for name in ("docs.tsv", "sw.tsv", "en.tsv", "qrels.txt"):
        (world["tmp"] / "irds-files" / name).unlink()
    again = load_collection(world["name"])
    assert again.corpus_path == corpus and corpus.stat().st_mtime_ns == before


def test_one_id_is_one_language(world):
    collection = load_collection("irds:" + world["ids"][0])
    assert collection.languages == ("sw",) and collection.oracle_lang is None


@pytest.mark.parametrize("name, message", [
    ("irds:clir-eval-test/none/xx", "has no dataset"),
    ("irds:", "expected irds:<dataset-id>"),
])
def test_bad_ids_are_one_error_line(world, name, message):
    with pytest.raises(KeyError, match=message):
        load_collection(name)
    result = CliRunner().invoke(app, ["search", "--system", "bm25-oracle", "--collection", name, "--lang", "sw"])
    assert result.exit_code == 2 and result.output.startswith("error:") and message in result.output


def test_joined_ids_must_share_documents(world, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "docs.tsv").write_text("x1\tanother document\n", encoding="utf-8")
    for name in ("ha.tsv", "qrels.txt"):
        (other / name).write_text((world["tmp"] / "irds-files" / ("sw.tsv" if name == "ha.tsv" else name)).read_text())
    [ha] = _register(other, ("ha",))
    with pytest.raises(KeyError, match="other documents"):
        load_collection(f"irds:{world['ids'][0]}+{ha}")


def test_queries_without_a_language_are_refused(world):
    from ir_datasets.datasets.base import Dataset
    from ir_datasets.formats import TrecQrels, TsvDocs, TsvQueries
    from ir_datasets.util import LocalDownload

    files = world["tmp"] / "irds-files"
    dataset_id = f"clir-eval-test/{uuid.uuid4().hex[:8]}/nolang"
    ir_datasets.registry.register(dataset_id, Dataset(
        TsvDocs(LocalDownload(files / "docs.tsv")), TsvQueries(LocalDownload(files / "sw.tsv")),
        TrecQrels(LocalDownload(files / "qrels.txt"), {1: "relevant"})))
    with pytest.raises(KeyError, match="declares no query language"):
        load_collection(f"irds:{dataset_id}")
    assert not (world["tmp"] / "cache" / "collections" / "irds").exists() or not any(
        (world["tmp"] / "cache" / "collections" / "irds").iterdir())  # nothing half-written


@pytest.mark.slow
def test_search_evaluate_and_run_match_the_bring_your_own_directory(world, tiny_bert_dir):
    runner = CliRunner()
    runs = {}
    for label, collection in (("irds", world["name"]), ("byo", str(world["byo"]))):
        for system in ("bm25-oracle", "teacher"):
            out = world["tmp"] / label / f"{system}.run"
            result = runner.invoke(app, ["search", "--system", system, "--collection", collection, "--lang", "sw",
                                         "--hits", "5", "--teacher", str(tiny_bert_dir), "--out", str(out)])
            assert result.exit_code == 0, result.output
            runs[label, system] = out
            assert out.read_bytes() == runs["irds", system].read_bytes()  # byte-identical runs
    irds_qrels = load_collection(world["name"]).qrels_path()
    scores = {}
    for label, qrels in (("irds", irds_qrels), ("byo", world["byo"] / "qrels.txt")):
        result = runner.invoke(app, ["evaluate", str(runs[label, "bm25-oracle"]), str(runs[label, "teacher"]),
                                     "--qrels", str(qrels), "-m", "mrr,ndcg@10", "--json"])
        assert result.exit_code == 0, result.output
        scores[label] = json.loads(result.output)
    assert scores["irds"] == scores["byo"] and 0 < scores["irds"]["bm25-oracle"]["mrr"] <= 1

    boards = {}
    for label, collection in (("irds", world["name"]), ("byo", str(world["byo"]))):
        config = world["tmp"] / f"{label}.yaml"
        config.write_text(f"""
name: {label}
output_dir: {world["tmp"] / label / "study"}
teacher: {tiny_bert_dir}
collections: [{{name: "{collection}", split: test, languages: [sw]}}]
systems: [bm25-oracle, teacher]
students: []
hits: 5
evaluation: {{metrics: [mrr, ndcg@10], baselines: [teacher], test: t}}
""", encoding="utf-8")
        result = runner.invoke(app, ["run", str(config), "--cache-dir", str(world["tmp"] / label / "steps")])
        assert result.exit_code == 0, result.output
        name = load_collection(collection).name
        study = world["tmp"] / label / "study"
        assert (study / "runs" / name / "sw" / "bm25-oracle.run").read_bytes() == runs[label, "bm25-oracle"].read_bytes()
        boards[label] = (study / "leaderboards" / f"{name}-sw.csv").read_text(encoding="utf-8")
    assert boards["irds"] == boards["byo"]
