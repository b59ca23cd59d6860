"""Adversarial inputs through the CLI: each is one `error:` line naming the file/line/key, exit code 2,
no traceback, nothing written and no work started; a BOM is scored right; concurrent builds build once.

Every probe is one of issue 12's (bad runs and qrels, study configs, the standalone distill, collection
ids and names, concurrent index builds).
"""

from __future__ import annotations

import gzip
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from clir_eval import cli
from clir_eval.collections.records import Document

CORPUS = [("d1", "the cat sat on the mat"), ("d2", "money market fell today"), ("d3", "river bank water")]
RUN = "q1 Q0 d1 1 2.0 t\nq1 Q0 d2 2 1.0 t\nq2 Q0 d3 1 3.0 t\nq2 Q0 d2 2 2.0 t\n"  # q1 rank 1, q2 rank 2: MRR 0.75


def invoke(*args: object):
    return CliRunner().invoke(cli.app, [str(a) for a in args])


def assert_user_error(result, *fragments: str) -> str:
    """Exit code 2, an `error:` line holding every fragment, and no traceback; returns the output."""
    output = result.output
    assert result.exit_code == 2, output
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # typer.Exit, not a crash
    assert "Traceback" not in output and "Aborted" not in output
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert errors, output
    assert any(all(f in line for f in fragments) for line in errors), (fragments, output)
    return output


def write_collection(root: Path, corpus=CORPUS, topics=None) -> Path:
    """A conventional-layout collection: corpus.jsonl, topics/{en,sw}.tsv, qrels.txt."""
    (root / "topics").mkdir(parents=True)
    with open(root / "corpus.jsonl", "w", encoding="utf-8") as handle:
        for docid, text in corpus:
            handle.write(json.dumps({"id": docid, "contents": text}) + "\n")
    for lang, lines in (topics or {"en": "q1\tcat\nq2\tmarket\n", "sw": "q1\tpaka\nq2\tsoko\n"}).items():
        (root / "topics" / f"{lang}.tsv").write_text(lines, encoding="utf-8")
    (root / "qrels.txt").write_text("q1 0 d1 1\nq2 0 d2 1\n", encoding="utf-8")
    return root


@pytest.fixture()
def coll(tmp_path):
    return write_collection(tmp_path / "coll")


def mrr(coll: Path, run: Path) -> float:
    result = invoke("evaluate", "--qrels", coll / "qrels.txt", run, "-m", "mrr", "--json")
    assert result.exit_code == 0, result.output
    return next(iter(json.loads(result.output[result.output.index("{"):]).values()))["mrr"]


# ---- runs and qrels ------------------------------------------------------------------------------------


def test_a_run_with_a_byte_order_mark_scores_as_without(coll, tmp_path):
    plain, bom = tmp_path / "plain.run", tmp_path / "bom.run"
    plain.write_text(RUN, encoding="utf-8")
    bom.write_bytes(b"\xef\xbb\xbf" + RUN.encode())
    assert mrr(coll, plain) == pytest.approx(0.75)
    assert mrr(coll, bom) == pytest.approx(0.75)  # with the BOM kept, q1 would be '\ufeffq1' and score 0


@pytest.mark.parametrize("which", ["run", "qrels"])
def test_truncated_gzip_names_the_file(coll, tmp_path, which):
    text = RUN if which == "run" else (coll / "qrels.txt").read_text()
    data = gzip.compress(text.encode() * 50)
    cut = tmp_path / f"cut.{which}.gz"
    cut.write_bytes(data[: len(data) // 2])
    run, qrels = (cut, coll / "qrels.txt") if which == "run" else (tmp_path / "r.run", cut)
    if which == "qrels":
        run.write_text(RUN, encoding="utf-8")
    assert_user_error(invoke("evaluate", "--qrels", qrels, run), str(cut), "truncated or corrupt gzip")


def test_a_plain_file_named_gz(coll, tmp_path):
    fake = tmp_path / "plain.run.gz"
    fake.write_text(RUN, encoding="utf-8")
    assert_user_error(invoke("evaluate", "--qrels", coll / "qrels.txt", fake), str(fake), "not gzip-compressed")


def test_a_directory_passed_as_a_run(coll, tmp_path):
    folder = tmp_path / "runs"
    folder.mkdir()
    assert_user_error(invoke("evaluate", "--qrels", coll / "qrels.txt", folder), str(folder), "is a directory")


def test_debug_shows_the_traceback(coll, tmp_path):
    folder = tmp_path / "runs"
    folder.mkdir()
    result = invoke("--debug", "evaluate", "--qrels", coll / "qrels.txt", folder)
    assert result.exit_code != 0 and "is a directory" in str(result.exception)
    assert not isinstance(result.exception, SystemExit)


# ---- search ------------------------------------------------------------------------------------------------


def test_search_out_is_a_directory_is_refused_before_searching(coll, tmp_path):
    out = tmp_path / "existing"
    out.mkdir()
    indexes = tmp_path / "indexes"
    result = invoke("search", "-s", "bm25-oracle", "-c", coll, "-l", "sw", "--out", out, "--index-dir", indexes)
    assert_user_error(result, str(out), "is a directory")
    assert not indexes.exists()  # nothing was indexed or searched
    assert list(out.iterdir()) == []


# ---- collections validate ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "corpus, topics, fragments",
    [
        (CORPUS, {"en": "q1\tcat\nq2\tmarket\n", "sw": "q1\tpaka\nq 2\tsoko\n"},
         ["topics/sw.tsv:2", "qid 'q 2' contains whitespace"]),
        (CORPUS + [("d 4", "x")], None, ["corpus.jsonl:4", "document id 'd 4' contains whitespace"]),
        ([], None, ["corpus.jsonl", "the corpus has no documents"]),
        (CORPUS, {"en": "q1\tcat\nq2\tmarket\n", "SW": "q1\tpaka\nq2\tsoko\n"},
         ["topics/SW.tsv", "language codes are lowercase: rename it to sw."]),
        (CORPUS, {"en": "q1\tcat\nq2\tmarket\n", "klingon": "q1\tpaka\nq2\tsoko\n"},
         ["topics/klingon.tsv", "'klingon' is not a language code"]),
    ],
    ids=["qid-space", "docid-space", "empty-corpus", "uppercase-lang", "unknown-lang"],
)
def test_validate_catches_what_search_would_reject(tmp_path, corpus, topics, fragments):
    root = write_collection(tmp_path / "c", corpus=corpus, topics=topics)
    output = assert_user_error(invoke("collections", "validate", root), *fragments)
    assert "relevant docid" not in output  # an empty corpus is said once, not as every judgement missing


def test_duplicate_key_in_collection_yaml(coll):
    (coll / "collection.yaml").write_text(
        "name: c\ncorpus: corpus.jsonl\nsplits:\n  test: {qrels: qrels.txt, topics: {sw: topics/sw.tsv}}\n"
        "name: d\n", encoding="utf-8")
    assert_user_error(invoke("collections", "validate", coll), "collection.yaml:5", "duplicate key 'name'",
                      "first on line 1")


# ---- study configs ------------------------------------------------------------------------------------------

STUDY = """name: t
collections: [{name: ntrex, languages: [sw]}]
systems: [teacher, bm25-psq, hybrid]
students: [{name: kd, method: kd, languages: [sw], max_pairs: 100}]
"""


@pytest.fixture()
def no_study(monkeypatch):
    """`clir-eval run` must fail while loading the config: running the study is a test failure."""
    from clir_eval.experiment import runner

    def refuse(*args, **kwargs):
        raise AssertionError("the study started although its config is bad")

    monkeypatch.setattr(runner, "run_study", refuse)


@pytest.mark.parametrize(
    "old, new, fragments",
    [
        ("[teacher, bm25-psq, hybrid]", "[teacher, bm25-foo]", ["systems[1]", "unknown system 'bm25-foo'"]),
        ("", "evaluation: {metrics: [mrr, ndcgg@10]}", ["evaluation.metrics[1]", "unknown metric 'ndcgg@10'"]),
        ("", "evaluation: {baselines: [techer]}", ["evaluation.baselines[0]", "'techer' is not a system"]),
        ("", "hybrid: {dense: me5-smal}", ["hybrid.dense", "'me5-smal' is not a system of the study"]),
        ("", "evaluation: {n_resamples: -5}", ["n_resamples must be >= 1"]),
        ("", "name: again", [":5: duplicate key 'name'"]),
        ("{name: ntrex,", "{name: ntrexx,", ["collections[0].name", "'ntrexx' is neither a built-in collection"]),
        ("{name: ntrex,", "{name: ntrex, split: tset,", ["collections[0].split", "no split 'tset'"]),
        ("languages: [sw]}]\nsystems", "languages: [sw, xx]}]\nsystems",
         ["collections[0].languages[1]", "no topics in 'xx'"]),
        ("languages: [sw], max_pairs", "languages: [sw, de], max_pairs",
         ["students[0].languages[1]", "no bitext for 'de'"]),
        ("method: kd,", "method: kd, backbone: me5-smal,", ["students[0].backbone", "unknown model 'me5-smal'"]),
        ("", "dev_pairs: -100", ["dev_pairs must be >= 1"]),
        ("", "threads: -3", ["threads must be >= 0"]),
        ("max_pairs: 100}", "max_pairs: 100, options: {lrr: 1}}",
         ["students[0].options", "unknown distillation option(s) ['lrr']"]),
        ("max_pairs: 100}", "max_pairs: 3}", ["students[0].max_pairs", "fewer than one batch"]),
        ("max_pairs: 100}", "max_pairs: 100, bitext: [lafandd]}",
         ["students[0].bitext[0]", "unknown bitext source 'lafandd'"]),
    ],
)
def test_a_bad_study_config_fails_before_any_work(tmp_path, no_study, old, new, fragments):
    text = STUDY.replace(old, new) if old else STUDY + new + "\n"
    assert text != STUDY
    config = tmp_path / "study.yaml"
    config.write_text(text, encoding="utf-8")
    out = tmp_path / "out"
    assert_user_error(invoke("run", config, "-o", out), str(config), *fragments)
    assert not out.exists()


def test_every_problem_of_a_config_is_reported_at_once(tmp_path, no_study):
    config = tmp_path / "study.yaml"
    config.write_text(STUDY.replace("[teacher, bm25-psq, hybrid]", "[teacher, bm25-foo]")
                      + "evaluation: {metrics: [ndcgg@10]}\n", encoding="utf-8")
    output = assert_user_error(invoke("run", config), "systems[1]")
    assert "evaluation.metrics[0]" in output


# ---- distill ---------------------------------------------------------------------------------------------------


@pytest.fixture()
def no_training(monkeypatch):
    from clir_eval.distill import trainer

    def refuse(*args, **kwargs):
        raise AssertionError("training started although the input is bad")

    monkeypatch.setattr(trainer, "distill", refuse)


def write_bitext(folder: Path, pairs: list[tuple[str, str]]) -> Path:
    folder.mkdir()
    (folder / "bitext.yaml").write_text(
        "name: mine\ntarget_lang: en\nlanguages:\n  sw: {train: sw-en.train.jsonl, dev: sw-en.dev.jsonl}\n",
        encoding="utf-8")
    for split in ("train", "dev"):
        with open(folder / f"sw-en.{split}.jsonl", "w", encoding="utf-8") as handle:
            for i, (source, target) in enumerate(pairs):
                handle.write(json.dumps({"id": f"{split}{i}", "source": source, "target": target}) + "\n")
    return folder


def test_distill_fewer_pairs_than_a_batch_is_refused_before_loading_models(tmp_path, no_training):
    out = tmp_path / "student"
    result = invoke("distill", "--method", "kd", "--student", "me5-small", "--lang", "sw", "--max-pairs", 3,
                    "--out", out)
    assert_user_error(result, "3 training pairs", "--max-pairs 3", "--batch-size 32")
    assert not out.exists()


def test_distill_min_margin_out_of_range_is_refused_before_loading_models(tmp_path, no_training):
    out = tmp_path / "student"
    result = invoke("distill", "--method", "kd", "--student", "me5-small", "--lang", "sw", "--min-margin", 5,
                    "--out", out)
    assert_user_error(result, "--min-margin must be in [0, 2)", "got 5.0")
    assert not out.exists()


def test_distill_takes_a_relative_bitext_path(tmp_path, monkeypatch, no_training):
    write_bitext(tmp_path / "bt", [("paka", "cat"), ("mbwa", "dog"), ("gari", "car")])
    monkeypatch.chdir(tmp_path)
    result = invoke("distill", "--method", "kd", "--student", "me5-small", "--lang", "sw", "--bitext", "./bt",
                    "--out", "student")
    # the source was found and read: the one problem left is its size
    assert_user_error(result, "3 training pairs (./bt sw train)", "fewer than one batch")


def test_distill_refuses_bitext_copied_from_test_topics(tmp_path, monkeypatch, no_training):
    from clir_eval.collections.registry import load_collection

    ntrex = load_collection("ntrex", validate=False)
    english = {t.qid: t.text for t in ntrex.topics("en", "test")}
    leaked = [(t.text, english[t.qid]) for t in ntrex.topics("sw", "test")[:40]]
    write_bitext(tmp_path / "bt", leaked)
    monkeypatch.chdir(tmp_path)
    args = ["distill", "--method", "kd", "--student", "me5-small", "--lang", "sw", "--bitext", "bt",
            "--batch-size", 8, "--out", "student"]
    assert_user_error(invoke(*args), "40 of 40 bitext pairs equal a test topic")
    # the runner's other policies: dropping them leaves nothing to train on
    assert_user_error(invoke(*args, "--leakage", "drop"), "0 training pairs")
    assert_user_error(invoke(*args, "--leakage", "ignore"), "leakage policy must be one of")
    assert not (tmp_path / "student").exists()


# ---- caches under concurrency ------------------------------------------------------------------------------


class SlowEncoder:
    """A document encoder that records its calls and takes its time, so a second builder arrives mid-build."""

    def __init__(self, calls: list[str], started: threading.Event | None = None) -> None:
        self.calls, self.started = calls, started

    def encode(self, texts, titles=None, show_progress=False):
        self.calls.append("encode")
        if self.started is not None:
            self.started.set()
            time.sleep(0.5)
        return np.eye(len(texts), 4, dtype=np.float32)


def test_two_builders_of_one_dense_index_build_it_once(tmp_path, tiny_bert_dir):
    from clir_eval.retrieval.dense import build_dense_index

    docs = [Document(docid, text) for docid, text in CORPUS]
    target = tmp_path / "dense" / "tiny"
    calls: list[str] = []
    started = threading.Event()
    results = {}

    def first():
        results["first"] = build_dense_index(docs, str(tiny_bert_dir), target, encoder=SlowEncoder(calls, started))

    thread = threading.Thread(target=first)
    thread.start()
    assert started.wait(30)  # the first builder is encoding, holding the lock
    second = build_dense_index(docs, str(tiny_bert_dir), target, encoder=SlowEncoder(calls))
    thread.join()
    assert calls == ["encode"]
    assert second.reused and not results["first"].reused and second.num_docs == 3


def test_two_runs_of_one_study_step_build_it_once(tmp_path):
    from clir_eval.experiment.cache import StepCache

    builds: list[str] = []
    started = threading.Event()

    def build(out: Path) -> None:
        builds.append("build")
        started.set()
        time.sleep(0.5)
        (out / "result.txt").write_text("done", encoding="utf-8")

    first = StepCache(tmp_path)
    thread = threading.Thread(target=lambda: first.run("runs", "x", {"a": 1}, build))
    thread.start()
    assert started.wait(30)
    second = StepCache(tmp_path)
    path = second.run("runs", "x", {"a": 1}, build)
    thread.join()
    assert builds == ["build"] and second.records[0].cached
    assert (path / "result.txt").read_text(encoding="utf-8") == "done"


def test_collections_with_one_name_get_their_own_index_dirs(tmp_path):
    from clir_eval.collections.registry import load_collection
    from clir_eval.retrieval.systems import default_index_dirs

    a = load_collection(write_collection(tmp_path / "a" / "data"))
    b = load_collection(write_collection(tmp_path / "b" / "data", corpus=CORPUS + [("d4", "more")]))
    same = load_collection(write_collection(tmp_path / "c" / "data"))
    assert a.name == b.name == "data"
    assert default_index_dirs(a).lucene != default_index_dirs(b).lucene
    assert default_index_dirs(a).lucene == default_index_dirs(same).lucene  # keyed by content, not place


def test_distill_unknown_backbone_and_bad_out_are_refused_before_any_work(tmp_path, no_training):
    result = invoke("distill", "--method", "kd", "--student", "me5-smal", "--lang", "sw", "--out", tmp_path / "s")
    assert_user_error(result, "--student: unknown model 'me5-smal'")
    taken = tmp_path / "a-file"
    taken.write_text("keep me", encoding="utf-8")
    result = invoke("distill", "--method", "kd", "--student", "me5-small", "--lang", "sw", "--out", taken)
    assert_user_error(result, str(taken), "is a file")
    assert taken.read_text(encoding="utf-8") == "keep me"


def test_report_and_compare_outputs_are_checked_before_reading(coll, tmp_path):
    run = tmp_path / "a.run"
    run.write_text(RUN, encoding="utf-8")
    taken = tmp_path / "a-file"
    taken.write_text("keep me", encoding="utf-8")
    result = invoke("compare", run, "--qrels", coll / "qrels.txt", "--baseline", "a", "--out", taken)
    assert_user_error(result, str(taken), "is a file; give a directory")
    assert taken.read_text(encoding="utf-8") == "keep me"
    result = invoke("report", tmp_path, "--out", tmp_path)
    assert_user_error(result, str(tmp_path), "is a directory; give the path of the file to write")


def test_search_refuses_an_id_with_whitespace_before_indexing(tmp_path):
    root = write_collection(tmp_path / "c", topics={"en": "q1\tcat\nq2\tmarket\n", "sw": "q1\tpaka\nq 2\tsoko\n"})
    indexes = tmp_path / "indexes"
    result = invoke("search", "-s", "bm25-oracle", "-c", root, "-l", "sw", "--out", tmp_path / "x.run",
                    "--index-dir", indexes)
    assert_user_error(result, "topics/sw.tsv:2", "qid 'q 2' contains whitespace")
    assert not indexes.exists() and not (tmp_path / "x.run").exists()


def test_two_index_processes_on_a_fresh_cache_build_once(coll, tmp_path, tiny_bert_dir):
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]),
                                                          os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "clir_eval.cli", "index", "dense", "-c", str(coll), "--model",
               str(tiny_bert_dir), "--out", str(tmp_path / "index")]
    processes = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for _ in range(2)]
    outputs = [process.communicate(timeout=300)[0] for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs
    states = sorted(line.split()[0] for output in outputs for line in output.splitlines()
                    if line.startswith(("wrote ", "reused ")))
    assert states == ["reused", "wrote"], outputs


def test_a_bug_keeps_its_traceback(coll, tmp_path, monkeypatch):
    from clir_eval.retrieval import runs

    def broken(path):
        return int("not a number")  # a ValueError that no check of the package raised: a bug, not bad input

    monkeypatch.setattr(runs, "read_run", broken)
    run = tmp_path / "a.run"
    run.write_text(RUN, encoding="utf-8")
    result = invoke("evaluate", "--qrels", coll / "qrels.txt", run)
    assert isinstance(result.exception, ValueError) and "error: " not in result.output
