"""System specs -> runs: registry parsing, and every system end to end on a tiny collection (byte-identical reruns)."""

import json
import sys
from pathlib import Path

import pytest

from clir_eval.retrieval.systems import SYSTEM_KINDS, IndexDirs, SystemOptions, SystemSpec, default_run_path, system_name

sys.path.insert(0, str(Path(__file__).parent))
from test_retrieval_translation import synthetic_bitext  # noqa: E402
from tiny_models import make_tiny_bert  # noqa: E402


def test_parse_specs_and_names():
    assert SystemSpec.parse("bm25-psq") == SystemSpec("bm25-psq")
    assert SystemSpec.parse("student:out/kd:sw") == SystemSpec("student", "out/kd:sw")  # split at the first colon
    assert system_name("student:out/kd-sw/") == "student-kd-sw"
    assert system_name("bm25-translated:mt/nllb sw.tsv") == "bm25-translated-nllb_sw"
    assert default_run_path("runs", "ntrex", "sw", "me5-small") == Path("runs/ntrex/sw/me5-small.run")
    assert SystemSpec.parse("hybrid").family == "fusion"


@pytest.mark.parametrize("spec, message", [("bm25", "valid: bm25-psq"), ("dpr-teacher", "unknown system"),
                                           ("student", "needs an argument"), ("teacher:x", "takes no argument")])
def test_bad_specs_are_refused(spec, message):
    with pytest.raises(ValueError, match=message):
        SystemSpec.parse(spec)


def test_options_validate_fusion_components():
    from clir_eval.retrieval.fusion import FusionConfig

    with pytest.raises(ValueError, match="bm25"):
        SystemOptions(fusion=FusionConfig(sparse="teacher"))
    with pytest.raises(ValueError, match="dense"):
        SystemOptions(fusion=FusionConfig(dense="bm25-oracle"))


def test_registry_families():
    assert {kind.family for kind in SYSTEM_KINDS.values()} == {"bm25", "dense", "fusion"}
    # each kind carries what builds it: a translator for BM25, its two encoders for dense, neither for fusion
    for name, kind in SYSTEM_KINDS.items():
        assert (kind.translator is not None) == (kind.family == "bm25"), name
        assert (kind.models is not None) == (kind.family == "dense"), name
    options = SystemOptions(teacher="my-teacher")
    models = {name: kind.models(SystemSpec(name, "out/kd" if kind.argument else None), options)
              for name, kind in SYSTEM_KINDS.items() if kind.models}
    assert models == {"teacher": ("my-teacher", "my-teacher"), "student": ("my-teacher", "out/kd"),
                      "me5-small": ("me5-small", "me5-small"), "oracle-dense": ("my-teacher", "my-teacher")}


ENGLISH_DOCS = {
    "d01": "the cat sat on the mat", "d02": "the dog was in the house", "d03": "money in the bank today",
    "d04": "the river water", "d05": "stock market fell today", "d06": "the president of the country",
    "d07": "school food and health", "d08": "the car was at the river", "d09": "news from the city today",
    "d10": "people and government election", "d11": "water for the people", "d12": "the market rose today",
}
TOPICS = {"q1": ("cat", "paka"), "q2": ("money bank", "pesa benki"), "q3": ("government election", "serikali uchaguzi"),
          "q4": ("school health", "shule afya")}
RELEVANT = {"q1": "d01", "q2": "d03", "q3": "d10", "q4": "d07"}


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    """A data root with a tiny collection, a tiny sw-en bitext source, and two tiny encoders of equal size."""
    root = tmp_path_factory.mktemp("world")
    coll = root / "collections" / "tiny"
    (coll / "topics").mkdir(parents=True)
    (coll / "corpus.jsonl").write_text(
        "".join(json.dumps({"id": d, "contents": t}) + "\n" for d, t in ENGLISH_DOCS.items()), encoding="utf-8")
    (coll / "qrels.txt").write_text("".join(f"{q} 0 {d} 1\n" for q, d in RELEVANT.items()), encoding="utf-8")
    for i, lang in enumerate(("en", "sw")):
        (coll / "topics" / f"{lang}.tsv").write_text("".join(f"{q}\t{t[i]}\n" for q, t in TOPICS.items()),
                                                     encoding="utf-8")
    bitext = root / "collections" / "tinybi"
    bitext.mkdir()
    (bitext / "bitext.yaml").write_text("target_lang: en\nlanguages:\n  sw:\n    train: sw-en.train.jsonl\n",
                                        encoding="utf-8")
    (bitext / "sw-en.train.jsonl").write_text("".join(
        json.dumps({"id": p.pair_id, "source": p.source, "target": p.target}) + "\n" for p in synthetic_bitext()),
        encoding="utf-8")
    translations = root / "mt.tsv"
    translations.write_text("".join(f"{q}\t{t[0]}\n" for q, t in TOPICS.items()), encoding="utf-8")
    teacher = make_tiny_bert(root / "teacher", hidden_size=32, seed=0)
    student = make_tiny_bert(root / "student", hidden_size=32, seed=5)
    return {"root": root, "collection": coll, "teacher": teacher, "student": student, "mt": translations}


@pytest.mark.slow
def test_every_system_writes_a_valid_deterministic_run(tiny_world, tmp_path, monkeypatch):
    import torch

    from clir_eval.collections.registry import load_collection
    from clir_eval.retrieval.fusion import FusionConfig
    from clir_eval.retrieval.runs import read_run_file
    from clir_eval.retrieval.systems import run_system

    torch.set_num_threads(1)
    monkeypatch.setenv("CLIR_EVAL_DATA", str(tiny_world["root"]))
    collection = load_collection(tiny_world["collection"])
    indexes = IndexDirs.under(tmp_path / "cache")
    options = SystemOptions(teacher=str(tiny_world["teacher"]), psq_bitext=(("tinybi", "train"),),
                            fusion=FusionConfig(sparse="bm25-psq", dense=f"student:{tiny_world['student']}"))
    specs = ["bm25-oracle", "bm25-psq", f"bm25-translated:{tiny_world['mt']}", "teacher",
             f"student:{tiny_world['student']}", "oracle-dense", "hybrid"]
    written = {}
    for spec in specs:
        path = run_system(spec, collection, "sw", indexes=indexes, hits=5, options=options,
                          out_path=default_run_path(tmp_path / "runs", collection.name, "sw", spec))
        parsed = read_run_file(path)
        assert parsed.tag == system_name(spec)
        assert set(parsed.run) == set(TOPICS)
        assert all(1 <= len(hits) <= 5 for hits in parsed.run.values())
        written[spec] = path.read_bytes()
    # BM25 with the human English topics, the user's (identical) translations and PSQ from a clean lexicon
    # all find the relevant document first.
    for spec in ("bm25-oracle", "bm25-psq", f"bm25-translated:{tiny_world['mt']}"):
        run = read_run_file(default_run_path(tmp_path / "runs", "tiny", "sw", spec)).run
        assert {q: max(h, key=h.get) for q, h in run.items()} == RELEVANT, spec
    # bm25-translated with the oracle's text gives the oracle's run, up to the tag
    oracle = written["bm25-oracle"].decode().replace(" bm25-oracle\n", "\n")
    assert written[f"bm25-translated:{tiny_world['mt']}"].decode().replace(" bm25-translated-mt\n", "\n") == oracle
    # the teacher's index is shared by teacher, student and oracle-dense: one dense index was built
    assert [p.name for p in indexes.dense.iterdir() if not p.name.startswith(".")] == [indexes.dense_for(str(tiny_world["teacher"])).name]
    # reruns are byte-identical (indexes and PSQ table reused from the cache)
    for spec in specs:
        again = run_system(spec, collection, "sw", indexes=indexes, hits=5, options=options,
                           out_path=tmp_path / "again" / f"{system_name(spec)}.run")
        assert again.read_bytes() == written[spec], spec
    # an explicit tag wins
    tagged = run_system("bm25-oracle", collection, "sw", indexes=indexes, hits=5, tag="my-tag",
                        out_path=tmp_path / "tagged.run", options=options)
    assert read_run_file(tagged).tag == "my-tag"


@pytest.mark.slow
def test_search_command_writes_the_same_run(tiny_world, tmp_path):
    from typer.testing import CliRunner

    from clir_eval.cli import app
    from clir_eval.collections.registry import load_collection
    from clir_eval.retrieval.systems import run_system

    cache = tmp_path / "cache"
    out = tmp_path / "cli.run"
    result = CliRunner().invoke(app, ["search", "--system", "bm25-oracle", "--collection", str(tiny_world["collection"]),
                                      "--lang", "sw", "--hits", "3", "--index-dir", str(cache), "--out", str(out)])
    assert result.exit_code == 0, result.output
    expected = run_system("bm25-oracle", load_collection(tiny_world["collection"]), "sw", indexes=IndexDirs.under(cache),
                          hits=3, out_path=tmp_path / "api.run")
    assert out.read_bytes() == expected.read_bytes()
    bad = CliRunner().invoke(app, ["search", "--system", "bm25", "--collection", str(tiny_world["collection"]),
                                   "--lang", "sw", "--index-dir", str(cache)])
    assert bad.exit_code == 2 and "valid: bm25-psq" in bad.output


def test_search_factory_builds_its_own_index_beside_flat_and_a_bad_one_fails_before_encoding(tiny_world, tmp_path):
    """``--factory IVF2,Flat --nprobe 2`` (every list probed) finds flat's ranking from its own index; a factory
    Faiss cannot build at the teacher's dimension is one ``error:`` line, with no index written."""
    from typer.testing import CliRunner

    from clir_eval.cli import app

    cache = tmp_path / "cache"

    def search(*extra: str) -> tuple[object, list[tuple[str, str]]]:
        out = tmp_path / f"{len(extra)}.run"
        result = CliRunner().invoke(app, ["search", "--system", "teacher", "--teacher", str(tiny_world["teacher"]),
                                          "--collection", str(tiny_world["collection"]), "--lang", "en", "--hits", "4",
                                          "--index-dir", str(cache), "--out", str(out), *extra])
        ranked = [(line.split()[0], line.split()[2]) for line in out.read_text().splitlines()] if out.exists() else []
        return result, ranked

    flat, flat_ranking = search()
    ivf, ivf_ranking = search("--factory", "IVF2,Flat", "--nprobe", "2")
    assert flat.exit_code == ivf.exit_code == 0, flat.output + ivf.output
    assert ivf_ranking == flat_ranking and len(flat_ranking) == 4 * len(TOPICS)
    dirs = sorted(p.name for p in (cache / "dense").iterdir() if p.is_dir() and (p / "index").is_file())
    assert len(dirs) == 2 and dirs[1] == dirs[0] + "-IVF2_Flat"
    bad, _ = search("--factory", "IVF2,PQ5", "--nprobe", "2", "--k-factor", "8")
    assert bad.exit_code == 2 and "IVF2,PQ5" in bad.output and bad.output.count("error:") == 1
    assert not any("PQ5" in p.name for p in (cache / "dense").iterdir())


def test_search_backend_openvino_builds_the_index_through_openvino_with_torchs_ranking(tiny_world, tmp_path,
                                                                                      monkeypatch):
    """``search --backend openvino`` (a study's ``dense_index: {backend: openvino}``) encodes the documents through
    OpenVINO when it builds the index, and ranks as torch's index does; an index already built is reused by either
    backend, with no conversion."""
    pytest.importorskip("openvino")
    from typer.testing import CliRunner

    from clir_eval.cli import app
    from clir_eval.models.openvino_backbone import OpenVINOBackbone

    converted: list[int] = []
    original = OpenVINOBackbone.__init__
    monkeypatch.setattr(OpenVINOBackbone, "__init__",
                        lambda self, *args, **kwargs: converted.append(1) or original(self, *args, **kwargs))
    batches: list[int] = []
    run_batch = OpenVINOBackbone.last_hidden_state
    monkeypatch.setattr(OpenVINOBackbone, "last_hidden_state",
                        lambda self, inputs: batches.append(len(inputs["input_ids"])) or run_batch(self, inputs))

    def search(cache: Path, *extra: str) -> list[tuple[str, str]]:
        out = cache / f"{len(extra)}-{len(converted)}.run"
        result = CliRunner().invoke(app, ["search", "--system", "teacher", "--teacher", str(tiny_world["teacher"]),
                                          "--collection", str(tiny_world["collection"]), "--lang", "en", "--hits", "4",
                                          "--index-dir", str(cache), "--out", str(out), *extra])
        assert result.exit_code == 0, result.output
        return [(line.split()[0], line.split()[2]) for line in out.read_text().splitlines()]

    torch_ranking = search(tmp_path / "torch")
    assert converted == [] and batches == []
    assert search(tmp_path / "openvino", "--backend", "openvino") == torch_ranking
    assert converted == [1] and sum(batches) == len(ENGLISH_DOCS)  # every document went through OpenVINO, once
    assert search(tmp_path / "torch", "--backend", "openvino") == torch_ranking
    assert converted == [1]  # the torch-built index was reused: nothing converted, nothing encoded


def test_psq_leakage_policy(tiny_world, monkeypatch):
    from clir_eval.collections.leakage import LeakageError
    from clir_eval.collections.registry import load_collection
    from clir_eval.retrieval.systems import psq_bitext

    monkeypatch.setenv("CLIR_EVAL_DATA", str(tiny_world["root"]))
    collection = load_collection(tiny_world["collection"])
    with pytest.raises(ValueError, match="psq_leakage"):
        SystemOptions(psq_leakage="ignore")
    options = SystemOptions(psq_bitext=(("tinybi", "train"),))
    clean = psq_bitext(collection, "sw", "test", options)
    assert len(clean) == 300  # no synthetic pair equals a topic
    # a bitext whose pair equals the English topic of q2 leaks
    leaky = tiny_world["root"] / "collections" / "leaky"
    leaky.mkdir(exist_ok=True)
    (leaky / "bitext.yaml").write_text("target_lang: en\nlanguages:\n  sw:\n    train: sw-en.train.jsonl\n", encoding="utf-8")
    (leaky / "sw-en.train.jsonl").write_text(
        '{"id": "a", "source": "pesa na benki", "target": "Money  bank"}\n{"id": "b", "source": "paka leo", "target": "cat today"}\n',
        encoding="utf-8")
    assert [p.pair_id for p in psq_bitext(collection, "sw", "test", SystemOptions(psq_bitext=(("leaky", "train"),)))] == ["b"]
    with pytest.raises(LeakageError):
        psq_bitext(collection, "sw", "test", SystemOptions(psq_bitext=(("leaky", "train"),), psq_leakage="error"))
    with pytest.raises(ValueError, match="no bitext for 'ha'"):
        psq_bitext(collection, "ha", "test", options)


@pytest.mark.slow
def test_a_student_run_scores_with_the_students_encoder(tiny_world, tmp_path):
    """The scores of a ``student:`` run are the student's query vectors against the teacher's document vectors."""
    import numpy as np
    import torch

    from clir_eval.collections.registry import load_collection
    from clir_eval.models.sentence import SentenceEncoder
    from clir_eval.retrieval.dense import read_vectors
    from clir_eval.retrieval.runs import read_run_file
    from clir_eval.retrieval.systems import run_system

    torch.set_num_threads(1)
    collection = load_collection(tiny_world["collection"])
    indexes = IndexDirs.under(tmp_path / "cache")
    options = SystemOptions(teacher=str(tiny_world["teacher"]))
    runs = {spec: read_run_file(run_system(spec, collection, "sw", indexes=indexes, hits=12, options=options,
                                           out_path=tmp_path / f"{system_name(spec)}.run")).run
            for spec in (f"student:{tiny_world['student']}", "teacher")}
    vectors, docids = read_vectors(indexes.dense_for(str(tiny_world["teacher"])))
    topics = collection.topics("sw")
    for spec, model in ((f"student:{tiny_world['student']}", tiny_world["student"]), ("teacher", tiny_world["teacher"])):
        queries = SentenceEncoder.from_pretrained(str(model)).encode([t.text for t in topics])
        for topic, query in zip(topics, queries):
            expected = dict(zip(docids, (vectors @ query).tolist()))
            got = runs[spec][topic.qid]
            assert np.allclose([got[d] for d in got], [expected[d] for d in got], atol=1e-4), spec
    assert runs[f"student:{tiny_world['student']}"] != runs["teacher"]


@pytest.mark.slow
def test_bm25_mt_through_search_and_run(tiny_world, tmp_path, monkeypatch):
    """bm25-mt end to end with a tiny random Marian: ``clir-eval search`` gives the BM25 run of the model's own
    translations (the same run as bm25-translated over them), and ``clir-eval run`` the same file."""
    import torch
    from typer.testing import CliRunner

    from clir_eval.cli import app
    from clir_eval.collections.registry import load_collection
    from clir_eval.retrieval.translation.seq2seq import Seq2SeqTranslator
    from test_retrieval_translation import _tiny_marian

    torch.set_num_threads(1)
    # a model fitted to translate the four topics (sw -> en), generating at the CLI's default settings
    pairs = [(sw, en) for en, sw in TOPICS.values()]
    marian = _tiny_marian(tmp_path / "marian", max_positions=256, words={w for p in pairs for t in p for w in t.split()},
                          train_pairs=pairs, steps=150)
    translations = Seq2SeqTranslator(str(marian)).translate(load_collection(tiny_world["collection"]).topics("sw"))
    assert {q.qid: q.text for q in translations} == {qid: en for qid, (en, _) in TOPICS.items()}
    tsv = tmp_path / "marian.tsv"
    tsv.write_text("".join(f"{q.qid}\t{q.text}\n" for q in translations), encoding="utf-8")
    cache, runner = tmp_path / "cache", CliRunner()
    runs = {}
    for system in (f"bm25-mt:{marian}", f"bm25-translated:{tsv}"):
        out = tmp_path / f"{system_name(system)}.run"
        result = runner.invoke(app, ["search", "--system", system, "--collection", str(tiny_world["collection"]),
                                     "--lang", "sw", "--hits", "5", "--index-dir", str(cache), "--out", str(out)])
        assert result.exit_code == 0, result.output
        runs[system] = out.read_text(encoding="utf-8")
    assert runs[f"bm25-mt:{marian}"].replace(" bm25-mt-marian\n", "\n") == \
        runs[f"bm25-translated:{tsv}"].replace(" bm25-translated-marian\n", "\n")
    top = {}
    for line in runs[f"bm25-mt:{marian}"].splitlines():
        qid, _, docid, rank, _, _ = line.split()
        if rank == "1":
            top[qid] = docid
    assert top == RELEVANT  # the translated queries find the relevant documents first

    config = tmp_path / "study.yaml"
    config.write_text(f"""
name: mt
output_dir: {tmp_path / "study"}
teacher: {tiny_world["teacher"]}
collections: [{{name: "{tiny_world["collection"]}", split: test, languages: [sw]}}]
systems: [bm25-oracle, "bm25-mt:{marian}"]
students: []
hits: 5
evaluation: {{metrics: [mrr], baselines: [bm25-oracle], test: t}}
""", encoding="utf-8")
    result = runner.invoke(app, ["run", str(config), "--cache-dir", str(tmp_path / "steps")])
    assert result.exit_code == 0, result.output
    study_run = tmp_path / "study" / "runs" / "tiny" / "sw" / "bm25-mt-marian.run"
    assert study_run.read_text(encoding="utf-8") == runs[f"bm25-mt:{marian}"]

    # a model that is neither local nor reachable: one error line that names the file-based alternative
    monkeypatch.setenv("CLIR_EVAL_OFFLINE", "1")
    missing = runner.invoke(app, ["search", "--system", "bm25-mt:no-such-org/no-such-model", "--collection",
                                  str(tiny_world["collection"]), "--lang", "sw", "--index-dir", str(tmp_path / "none")])
    assert missing.exit_code == 2 and missing.output.startswith("error:")
    assert "bm25-translated:<tsv>" in missing.output and "bm25-file" not in missing.output
    assert not (tmp_path / "none").exists()  # refused before any index was built
