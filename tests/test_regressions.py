"""Regression specs: validation (file, line, key; exit 2) and a real regenerate / record / check cycle."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from clir_eval.cli import app
from clir_eval.regressions import SpecError, compare, list_specs, load_spec

sys.path.insert(0, str(Path(__file__).parent))
from test_retrieval_systems import ENGLISH_DOCS, RELEVANT, TOPICS  # noqa: E402


@pytest.fixture()
def tiny(tmp_path):
    """A tiny bring-your-own collection (sw topics, English oracle) and a spec over it."""
    coll = tmp_path / "tiny"
    (coll / "topics").mkdir(parents=True)
    (coll / "corpus.jsonl").write_text(
        "".join(json.dumps({"id": d, "contents": t}) + "\n" for d, t in ENGLISH_DOCS.items()), encoding="utf-8")
    # q4's relevant document is not the one BM25 finds first, so MRR is not trivially 1
    qrels = {**RELEVANT, "q4": "d05"}
    (coll / "qrels.txt").write_text("".join(f"{q} 0 {d} 1\n" for q, d in qrels.items()), encoding="utf-8")
    for i, lang in enumerate(("en", "sw")):
        (coll / "topics" / f"{lang}.tsv").write_text("".join(f"{q}\t{t[i]}\n" for q, t in TOPICS.items()),
                                                     encoding="utf-8")
    spec = {
        "description": "test spec",
        "collection": str(coll),
        "split": "test",
        "command": "clir-eval search --collection {collection} --lang {lang} --system {system} --hits 5 "
                   "--index-dir {out}/index {args} --out {run}",
        "metrics": ["mrr", "recall@5"],
        "tolerances": {"exact": {"value": 0.0, "why": "deterministic"}},
        "systems": {"bm25-oracle": {"tolerance": "exact"}},
        "languages": ["sw"],
        "ci": {"languages": ["sw"], "systems": ["bm25-oracle"]},
    }
    path = tmp_path / "tiny-spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return {"root": tmp_path, "collection": coll, "spec": path, "data": spec}


def _rewrite(path: Path, **changes) -> None:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data.update(changes)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def test_committed_specs_are_valid():
    names = list_specs()
    assert {"ntrex", "xquad-r", "default-study"} <= set(names)
    for name in names:
        spec = load_spec(name)
        assert spec.metrics and spec.languages
        for lang, by_system in spec.expected.items():
            for system, expected in by_system.items():
                if expected is not None:  # recorded values carry their provenance
                    assert set(expected.scores) == set(spec.metrics), (name, lang, system)
                    assert expected.date and expected.versions.get("clir-eval")
    assert load_spec("ntrex").entries(ci=True) == [("sw", "bm25-oracle"), ("sw", "teacher")]


def test_tolerances_may_differ_by_language(tiny):
    _rewrite(tiny["spec"], tolerances={"exact": {"value": 0.0, "why": "deterministic", "by_lang": {"sw": 0.01}}})
    tolerance = load_spec(tiny["spec"]).tolerances["exact"]
    assert tolerance.for_lang("sw") == 0.01 and tolerance.for_lang("en") == 0.0
    _rewrite(tiny["spec"], tolerances={"exact": {"value": 0.0, "why": "x", "by_lang": {"sw": 2}}})
    with pytest.raises(SpecError, match="by_lang.sw must be in"):
        load_spec(tiny["spec"])


def test_compare_is_exact_to_four_decimals_plus_tolerance():
    assert compare(0.98694, 0.9869, 0.0)
    assert not compare(0.98696, 0.9869, 0.0)  # rounds to 0.9870
    assert compare(0.9017, 0.9001, 0.0016) and not compare(0.9018, 0.9001, 0.0016)


@pytest.mark.parametrize("changes, key, line_of", [
    ({"systems": {"bm25-oracle": {"tolerance": "loose"}}}, "systems.bm25-oracle.tolerance", "systems"),
    ({"colection": "x"}, "unknown key", None),
    ({"command": "clir-eval search --lang {lang} --system {system}"}, "must write its run to", "command"),
    ({"command": "clir-eval search --lang {language} --out {run}"}, "unknown placeholder", "command"),
    ({"languages": ["sw", "yo"]}, "['yo'] have no test topics", "languages"),
    ({"systems": {"bm25-oracle": {"tolerance": "exact"}, "bm25": {"tolerance": "exact"}}}, "valid: bm25-psq",
     "systems"),
    ({"metrics": ["mrr", "ndcg@x"]}, "metrics", "metrics"),
    ({"tolerances": {"exact": {"value": 0.0, "why": ""}}}, "justification", "tolerances"),
    ({"expected": {"sw": {"teacher": None}}}, "'teacher' is not in systems", "expected"),
    ({"systems": {"bm25-oracle": {"tolerance": "exact", "languages": ["en"]}}},
     "systems.bm25-oracle.languages: ['en'] not in languages", "systems"),
    ({"languages": ["sw", "en"], "systems": {"bm25-oracle": {"tolerance": "exact", "languages": ["sw"]}},
      "expected": {"en": {"bm25-oracle": None}}}, "'bm25-oracle' runs only on ['sw']", "expected"),
])
def test_bad_specs_name_file_line_and_key(tiny, changes, key, line_of):
    _rewrite(tiny["spec"], **changes)
    with pytest.raises(SpecError, match=key.replace("[", r"\[").replace("]", r"\]")) as info:
        load_spec(tiny["spec"])
    message = str(info.value)
    assert message.startswith(str(tiny["spec"]))
    if line_of:
        lines = tiny["spec"].read_text(encoding="utf-8").splitlines()
        expected_line = next(i for i, line in enumerate(lines, 1) if line.startswith(f"{line_of}:"))
        assert message.split(":")[1].isdigit() and int(message.split(":")[1]) >= expected_line
    # the command refuses it with one error line and exit 2, before running anything
    result = CliRunner().invoke(app, ["regressions", str(tiny["spec"]), "--runs-dir", str(tiny["root"] / "runs")])
    assert result.exit_code == 2 and result.output.startswith("error:")
    assert not (tiny["root"] / "runs").exists()


@pytest.mark.parametrize("args, message", [(["--system", "bm25-psq"], "--system bm25-psq: in no selected spec"),
                                           (["--lang", "ha"], "--lang ha: in no selected spec")])
def test_selections_that_name_nothing_are_refused(tiny, args, message):
    result = CliRunner().invoke(app, ["regressions", str(tiny["spec"]), *args])
    assert result.exit_code == 2 and result.output.startswith("error:") and message in result.output
    _rewrite(tiny["spec"], ci=None)
    result = CliRunner().invoke(app, ["regressions", str(tiny["spec"]), "--ci"])
    assert result.exit_code == 2 and "nothing selected" in result.output


def test_a_system_with_languages_is_run_and_recorded_only_on_them(tiny):
    """A per-language student of a study: its spec entry names its languages; no run is asked of it elsewhere."""
    _rewrite(tiny["spec"], languages=["sw", "en"],
             systems={"bm25-oracle": {"tolerance": "exact"}, "bm25-psq": {"tolerance": "exact", "languages": ["en"]}})
    spec = load_spec(tiny["spec"], check_data=False)
    assert spec.entries() == [("sw", "bm25-oracle"), ("en", "bm25-oracle"), ("en", "bm25-psq")]
    assert spec.entries(systems=("bm25-psq",)) == [("en", "bm25-psq")]
    result = CliRunner().invoke(app, ["regressions", str(tiny["spec"]), "--runs-dir", str(tiny["root"] / "runs")])
    assert result.exit_code == 0, result.output
    rows = [line.split()[:2] for line in result.output.splitlines() if line.strip().startswith(("sw ", "en "))]
    assert ["sw", "bm25-psq"] not in rows and ["en", "bm25-psq"] in rows


def test_unrecorded_entries_are_reported_not_run(tiny):
    result = CliRunner().invoke(app, ["regressions", str(tiny["spec"]), "--runs-dir", str(tiny["root"] / "runs")])
    assert result.exit_code == 0, result.output
    assert "not recorded" in result.output
    assert not (tiny["root"] / "runs").exists()


@pytest.mark.slow
def test_record_then_check_then_catch_a_moved_score(tiny):
    from clir_eval.evaluation.evaluate import evaluate_runs, qrels_from_records
    from clir_eval.collections.registry import load_collection
    from clir_eval.retrieval.runs import read_run

    runs = tiny["root"] / "runs"
    recorded = CliRunner().invoke(app, ["regressions", str(tiny["spec"]), "--record", "--runs-dir", str(runs)])
    assert recorded.exit_code == 0, recorded.output
    # the run lands in the runs/ layout and the recorded values are what evaluate gives for it
    run_path = runs / "tiny" / "sw" / "bm25-oracle.run"
    qrels = qrels_from_records(load_collection(tiny["collection"]).qrels())
    means = evaluate_runs(qrels, {"r": read_run(run_path)}, ["mrr", "recall@5"]).means["r"]
    spec = load_spec(tiny["spec"])
    expected = spec.expected_for("sw", "bm25-oracle")
    assert expected.scores == {m: round(v, 4) for m, v in means.items()}
    assert 0 < expected.scores["mrr"] < 1
    assert expected.versions["pyserini"] and expected.date
    assert spec.description == "test spec"  # the rest of the file is kept

    # a score that moved by one unit in the 4th decimal is caught (here the CI subset, the only entry)
    data = yaml.safe_load(tiny["spec"].read_text(encoding="utf-8"))
    data["expected"]["sw"]["bm25-oracle"]["scores"]["mrr"] = round(expected.scores["mrr"] - 0.0001, 4)
    tiny["spec"].write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    moved = CliRunner().invoke(app, ["regressions", str(tiny["spec"]), "--ci", "--runs-dir", str(runs)])
    assert moved.exit_code == 1, moved.output
    statuses = [line.split()[-1] for line in moved.output.splitlines() if line.strip().startswith("sw ")]
    assert statuses == ["fail", "pass"]  # mrr moved, recall@5 did not
    assert "fail: tiny-spec sw bm25-oracle: clir-eval search" in moved.output  # with the command to reproduce it


@pytest.mark.slow
def test_a_failing_command_is_an_error_with_its_message(tiny):
    data = yaml.safe_load(tiny["spec"].read_text(encoding="utf-8"))
    data["systems"]["bm25-mt"] = {"tolerance": "exact"}
    tiny["spec"].write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    with pytest.raises(SpecError, match="needs an argument"):
        load_spec(tiny["spec"])
    data["systems"] = {"bm25-translated:missing.tsv": {"tolerance": "exact"}}
    data["ci"]["systems"] = ["bm25-translated:missing.tsv"]
    tiny["spec"].write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    result = CliRunner().invoke(app, ["regressions", str(tiny["spec"]), "--record",
                                      "--runs-dir", str(tiny["root"] / "runs")])
    assert result.exit_code == 1
    assert "error" in result.output and "missing.tsv" in result.output
    assert "expected" not in yaml.safe_load(tiny["spec"].read_text(encoding="utf-8"))  # nothing recorded


def test_recording_a_new_language_extends_the_spec(tiny):
    from clir_eval.regressions import extend, record

    spec = load_spec(tiny["spec"])
    with pytest.raises(SpecError, match="--lang yo: .* has no test topics"):
        extend(spec, ("yo",))
    wider = extend(spec, ("en", "sw"))
    assert wider.languages == ("sw", "en") and extend(wider, ("en",)) is wider
    record(wider, {"en": {"bm25-oracle": {"mrr": 0.123456, "recall@5": 1.0}}, "sw": {"bm25-oracle": {}}})
    again = load_spec(tiny["spec"])
    assert again.languages == ("sw", "en")
    assert again.expected_for("en", "bm25-oracle").scores == {"mrr": 0.1235, "recall@5": 1.0}
    assert again.expected_for("sw", "bm25-oracle") is None  # a failed run (no scores) records nothing
    assert "&id" not in tiny["spec"].read_text(encoding="utf-8")


@pytest.mark.slow
def test_a_language_with_its_own_queries_is_scored_on_its_own_judgements(tmp_path):
    """parallel_topics: false (lafand-x): sw's score averages over sw's queries, not every language's with 0s."""
    from test_collections_byo import _per_language
    from clir_eval.regressions import run_regressions

    collection = _per_language(tmp_path / "mine")
    spec = {
        "description": "per-language queries", "collection": str(collection), "split": "test",
        "command": "clir-eval search --collection {collection} --lang {lang} --system {system} --hits 3 "
                   "--index-dir {out}/index --out {run}",
        "metrics": ["mrr"], "tolerances": {"exact": {"value": 0.0, "why": "deterministic"}},
        "systems": {"bm25-oracle": {"tolerance": "exact"}}, "languages": ["sw"],
    }
    path = tmp_path / "per-language.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    result = run_regressions([load_spec(path)], runs_root=tmp_path / "runs", record=True, cwd=tmp_path)
    assert result.scores["per-language"]["sw"]["bm25-oracle"] == {"mrr": 1.0}
