"""The study runner end to end on tiny models: outputs, manifest, and step caching (nothing recomputed twice)."""

import json
from dataclasses import replace

import pytest

from clir_eval.experiment.config import load_config
from clir_eval.experiment.runner import run_study
from clir_eval.retrieval.runs import read_run_file

pytestmark = pytest.mark.slow  # Faiss search goes through Pyserini, which starts the JVM


@pytest.fixture(scope="module")
def study(tmp_path_factory, tiny_bert_dir, tiny_bert_dir_48):
    root = tmp_path_factory.mktemp("study")
    config = root / "study.yaml"
    config.write_text(f"""
name: tiny
output_dir: {root / "out"}
teacher: {tiny_bert_dir}
collections: [{{name: ntrex, split: test, languages: [sw]}}]
systems: [teacher, oracle-dense, bm25-oracle, hybrid]
hybrid: {{method: rrf, sparse: bm25-oracle, dense: teacher}}
students:
  - {{name: kd, method: kd, backbone: {tiny_bert_dir_48}, languages: [sw], max_pairs: 24,
      options: {{max_steps: 2, batch_size: 8, lr: 0.001}}}}
  - {{name: ot, method: ot, backbone: {tiny_bert_dir_48}, languages: [sw], max_pairs: 24,
      options: {{max_steps: 2, batch_size: 8, lr: 0.001}}}}
sweep:
  base: {{method: kd, backbone: {tiny_bert_dir_48}, languages: [sw], max_pairs: 24,
          options: {{max_steps: 2, batch_size: 8}}}}
  axes: {{options.lr: [0.001, 0.01]}}
dev_pairs: 8
hits: 20
evaluation: {{metrics: [mrr, ndcg@10], baselines: [teacher], test: randomization, n_resamples: 200}}
""", encoding="utf-8")
    loaded = load_config(config)
    first = run_study(loaded, cache_root=root / "cache")
    return loaded, root, first


def test_a_study_writes_runs_leaderboards_report_and_manifest(study):
    config, root, result = study
    out = root / "out"
    for lang in ("sw",):
        for system in ("teacher", "oracle-dense", "bm25-oracle", "hybrid", "kd", "ot"):
            run = read_run_file(out / "runs" / "ntrex" / lang / f"{system}.run")
            assert 1300 <= len(run.run) <= 1327 and run.tag == system  # BM25 finds nothing for a stopword-only query
    assert (out / "leaderboards" / "ntrex-sw.md").is_file() and (out / "leaderboards" / "ntrex-sw.tex").is_file()
    assert "<html" in (out / "report.html").read_text(encoding="utf-8").lower()
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["config"]["name"] == "tiny" and manifest["versions"]["torch"]
    assert {e["system"] for e in manifest["runs"]} == {"teacher", "oracle-dense", "bm25-oracle", "hybrid", "kd", "ot",
                                                       "lr0.001", "lr0.01", "student-init"}
    # One untrained student (backbone + least-squares map) is the start of all four students, a system of its
    # own and a baseline every trained student is tested against.
    start = manifest["students"]["student-init"]
    assert start["training_args"]["steps"] == 0 and start["training_args"]["start"]["fit_pairs"] == 24
    assert all(manifest["students"][name]["training_args"]["config"]["student"] == start["path"]
               for name in ("kd", "ot", "lr0.001", "lr0.01"))
    assert [r.name for r in result.steps].count("students/student-init") == 1
    assert manifest["baselines"] == ["teacher", "student-init"]
    assert "student-init (b)" in (out / "leaderboards" / "ntrex-sw.md").read_text(encoding="utf-8")
    assert all(len(e["data_sha256"]) == 64 and e["command"].startswith("clir-eval search") for e in manifest["runs"])
    kd = manifest["students"]["kd"]["training_args"]
    assert kd and '"method": "kd"' in json.dumps(kd)
    assert manifest["peak_memory_mib"] > 0 and result.computed_steps > 0
    assert set(result.leaderboards) == {"ntrex/sw"}
    # both oracles read the English topics: shown, never set in bold as the best system
    assert manifest["upper_bounds"] == ["oracle-dense", "bm25-oracle"]
    rows = (out / "leaderboards" / "ntrex-sw.md").read_text(encoding="utf-8").splitlines()
    assert [r for r in rows if r.startswith("| bm25-oracle")] and not any(
        "**" in r for r in rows if r.startswith(("| bm25-oracle", "| oracle-dense")))
    assert any("**" in r for r in rows if r.startswith("| "))
    # the sweep's students are systems too, and the sweep analysis plots effectiveness against its axis
    assert (out / "runs" / "ntrex" / "sw" / "lr0.01.run").is_file()
    assert (out / "sweep" / "ntrex-mrr-vs-options_lr.png").stat().st_size > 1000
    assert "lr0.001" in (out / "sweep" / "sweep.csv").read_text()


def test_a_second_run_computes_nothing(study):
    config, root, _ = study
    before = (root / "out" / "runs" / "ntrex" / "sw" / "kd.run").stat().st_mtime_ns
    again = run_study(config, cache_root=root / "cache")
    assert again.computed_steps == 0 and all(record.cached for record in again.steps)
    assert (root / "out" / "runs" / "ntrex" / "sw" / "kd.run").stat().st_mtime_ns == before


def test_changing_one_setting_recomputes_only_what_depends_on_it(study):
    config, root, _ = study
    evaluation_only = replace(config, evaluation=replace(config.evaluation, alpha=0.01))
    result = run_study(evaluation_only, cache_root=root / "cache")
    assert all(record.cached for record in result.steps) and not result.evaluation_cached
    # the correction's family is an evaluation setting too, and the leaderboard's legend follows it
    per_metric = replace(config, evaluation=replace(config.evaluation, family="metric"))
    result = run_study(per_metric, cache_root=root / "cache")
    assert all(record.cached for record in result.steps) and not result.evaluation_cached
    board = json.loads((root / "out" / "leaderboards" / "ntrex-sw.json").read_text(encoding="utf-8"))
    assert board["significance"]["family"] == "metric"
    assert any("within each metric" in line for line in board["legend"])

    ot = replace(config.students[1], options={**config.students[1].options, "lr": 0.002})
    changed = replace(config, students=(config.students[0], ot))
    result = run_study(changed, cache_root=root / "cache")
    computed = sorted(record.name for record in result.steps if not record.cached)
    assert computed == ["runs/ntrex-sw-ot", "students/ot"]

    # only the hybrid reads the fusion settings: another dense component recomputes the hybrid alone
    other_hybrid = replace(config, hybrid={**config.hybrid, "dense": "kd"}, output_dir=str(root / "out-other-hybrid"))
    result = run_study(other_hybrid, cache_root=root / "cache")
    assert sorted(record.name for record in result.steps if not record.cached) == ["runs/ntrex-sw-hybrid"]


def test_the_fused_hybrid_equals_the_retrieval_systems_own(study, tmp_path):
    from clir_eval.collections.registry import load_collection
    from clir_eval.experiment.runner import StudyRunner
    from clir_eval.retrieval.systems import IndexDirs, index_key, run_system

    config, root, _ = study
    runner = StudyRunner(config, cache_root=root / "cache")
    options = runner.system_options({})
    ntrex = load_collection("ntrex")
    indexes = IndexDirs.under(root / "cache" / "indexes" / index_key(ntrex))
    direct = run_system("hybrid", ntrex, "sw", "test", indexes=indexes,
                        out_path=tmp_path / "hybrid.run", hits=config.hits, tag="hybrid", options=options)
    assert direct.read_bytes() == (root / "out" / "runs" / "ntrex" / "sw" / "hybrid.run").read_bytes()


def test_a_dense_index_setting_searches_its_own_index_beside_flat(study):
    """``dense_index`` picks the Faiss index of every dense system: an IVF index with every list probed is built
    beside the flat one (flat stays) and finds flat's hits; only the dense runs are searched again."""
    from clir_eval.collections.registry import load_collection
    from clir_eval.retrieval.dense import read_index_meta
    from clir_eval.retrieval.systems import IndexDirs, index_key

    config, root, _ = study
    ivf = replace(config, dense_index={"factory": "IVF2,Flat", "nprobe": 2}, output_dir=str(root / "out-ivf"))
    result = run_study(ivf, cache_root=root / "cache")
    computed = {record.name for record in result.steps if not record.cached}
    assert {"runs/ntrex-sw-teacher", "runs/ntrex-oracle-dense", "runs/ntrex-sw-kd"} <= computed
    assert not any(name.startswith("students/") for name in computed)
    assert "runs/ntrex-bm25-oracle" in {record.name for record in result.steps} - computed  # BM25: not searched again
    dense = IndexDirs.under(root / "cache" / "indexes" / index_key(load_collection("ntrex"))).dense
    factories = sorted(read_index_meta(path).index["factory"] for path in dense.iterdir() if path.is_dir()
                       and read_index_meta(path) is not None)
    assert factories == ["Flat", "IVF2,Flat"]

    def ranked(out: str, system: str) -> list[tuple[str, str]]:
        lines = (root / out / "runs" / "ntrex" / "sw" / f"{system}.run").read_text(encoding="utf-8").splitlines()
        return [(line.split()[0], line.split()[2]) for line in lines]

    for system in ("teacher", "kd"):
        assert ranked("out-ivf", system) == ranked("out", system)


def test_switching_the_encoding_backend_searches_nothing_again(study):
    """Both backends build the same index (vectors equal to float32 rounding) and either reuses the other's, so the
    backend is not an input of a run: a study switched to openvino finds every step cached."""
    config, root, _ = study
    switched = replace(config, dense_index={"backend": "openvino"}, output_dir=str(root / "out-openvino"))
    result = run_study(switched, cache_root=root / "cache")
    assert [record.name for record in result.steps if not record.cached] == []
    assert any(record.name == "runs/ntrex-sw-teacher" for record in result.steps)


def test_the_oracles_are_searched_once_for_languages_with_the_same_qids(study, tmp_path):
    """The oracles read the human English topics: ha's oracle runs are sw's (same qids), not computed again,
    and they are what searching ha on its own gives."""
    from clir_eval.collections.registry import load_collection
    from clir_eval.experiment.runner import StudyRunner
    from clir_eval.retrieval.systems import IndexDirs, index_key, run_system

    config, root, _ = study
    two = replace(config, collections=(replace(config.collections[0], languages=("sw", "ha")),),
                  output_dir=str(root / "out-two-languages"))
    result = run_study(two, cache_root=root / "cache")
    computed = {record.name for record in result.steps if not record.cached}
    assert "runs/ntrex-ha-teacher" in computed and not any("oracle" in name for name in computed)
    assert [record.name for record in result.steps].count("runs/ntrex-oracle-dense") == 2

    ntrex = load_collection("ntrex")
    options = StudyRunner(two, cache_root=root / "cache").system_options({})
    indexes = IndexDirs.under(root / "cache" / "indexes" / index_key(ntrex))
    runs = root / "out-two-languages" / "runs" / "ntrex"
    for system in ("oracle-dense", "bm25-oracle"):
        direct = run_system(system, ntrex, "ha", "test", indexes=indexes, out_path=tmp_path / f"{system}.run",
                            hits=config.hits, tag=system, options=options)
        assert direct.read_bytes() == (runs / "ha" / f"{system}.run").read_bytes()
        assert (runs / "sw" / f"{system}.run").read_bytes() == direct.read_bytes()


def test_english_pairs_are_english_sentences_outside_the_bitext_and_the_test_collections(tmp_path, tiny_bert_dir):
    from clir_eval.collections.english import english_sides
    from clir_eval.experiment.runner import StudyRunner

    path = tmp_path / "study.yaml"
    path.write_text(f"""
name: english-pairs
teacher: {tiny_bert_dir}
collections: [{{name: ntrex, split: test, languages: [sw]}}]
systems: [teacher]
students:
  - {{name: kd, method: kd, backbone: {tiny_bert_dir}, languages: [sw], max_pairs: 300, english_pairs: 500}}
""", encoding="utf-8")
    runner = StudyRunner(load_config(path), cache_root=tmp_path / "cache")
    runner.load_collections()
    pairs = runner.training_pairs(runner.config.students[0])
    bitext, english = pairs[:300], [pair.source for pair in pairs[300:]]
    assert all(pair.source_lang == "sw" for pair in bitext) and len(english) == 500 == len(set(english))
    assert all(pair.source == pair.target and pair.source_lang == pair.target_lang == "en" for pair in pairs[300:])
    assert set(english) <= set(english_sides(["lafand"]))  # English sides of the train splits
    assert not set(english) & {pair.target for pair in bitext}  # new English, not the bitext's own again
    ntrex = runner.collections["ntrex"]
    test_english = {topic.text for topic in ntrex.topics("en", "test")}
    assert not set(english) & test_english
    # without english_pairs, the pairs are the bitext alone
    plain = replace(runner.config.students[0], english_pairs=0)
    assert runner.training_pairs(plain) == bitext


def test_a_later_option_at_its_default_keeps_a_students_key():
    """Options in KEYED_WHEN_SET enter a student's cache key only when set, so adding one keeps the students
    already trained; set, it changes the key."""
    from clir_eval.distill.losses import LossOptions
    from clir_eval.distill.trainer import DistillConfig
    from clir_eval.experiment.cache import stable_hash
    from clir_eval.experiment.runner import KEYED_WHEN_SET, distill_key

    defaults = LossOptions()
    assert KEYED_WHEN_SET <= set(defaults.to_dict())
    plain = distill_key(DistillConfig(method="kd+contrastive", student="a"))
    assert not set(KEYED_WHEN_SET) & set(plain["loss"])
    assert set(plain["loss"]) | set(KEYED_WHEN_SET) == set(defaults.to_dict())
    other = {"ot_solver": "emd"}  # a value other than the default, for the options that are not flags
    for name in KEYED_WHEN_SET:
        default = getattr(defaults, name)
        value = other[name] if name in other else not default
        changed = distill_key(DistillConfig(method="kd+contrastive", student="a", loss=LossOptions(**{name: value})))
        assert changed["loss"][name] == value and stable_hash(changed) != stable_hash(plain)


def test_a_language_with_its_own_queries_is_evaluated_on_its_own_judgements(tmp_path, tiny_bert_dir):
    """parallel_topics: false (lafand-x): sw's table averages over sw's queries, not every language's with 0s."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from test_collections_byo import _per_language

    collection = _per_language(tmp_path / "mine")
    config = tmp_path / "study.yaml"
    config.write_text(f"""
name: per-language
output_dir: {tmp_path / "out"}
teacher: {tiny_bert_dir}
collections: [{{name: {collection}, split: test, languages: [sw, ha]}}]
systems: [bm25-oracle]
hits: 3
evaluation: {{metrics: [mrr], baselines: []}}
""", encoding="utf-8")
    run_study(load_config(config), cache_root=tmp_path / "cache")
    runs = tmp_path / "out" / "runs" / "mine"
    for lang, queries in (("sw", 2), ("ha", 1)):
        board = json.loads((tmp_path / "out" / "leaderboards" / f"mine-{lang}.json").read_text(encoding="utf-8"))
        assert board["n_queries"] == {"bm25-oracle": queries} and board["means"]["bm25-oracle"]["mrr"] == 1.0
    assert (runs / "sw" / "qrels.test.txt").read_text(encoding="utf-8").split("\n")[:-1] == [
        "q1 0 d1 1", "q2 0 d2 1"]


def test_evaluation_trend_is_written_by_the_evaluate_step(study):
    from clir_eval.experiment.config import TrendSpec

    config, root, _ = study
    trend = TrendSpec(start="student-init", methods=("kd", "ot"), contrasts=("ot:kd",))
    with_trend = replace(config, evaluation=replace(config.evaluation, trend=trend))
    result = run_study(with_trend, cache_root=root / "cache")
    assert all(record.cached for record in result.steps) and not result.evaluation_cached
    data = json.loads((root / "out" / "trend" / "trend.json").read_text(encoding="utf-8"))
    assert data["languages"] == ["sw"] and [e["name"] for e in data["effects"]][-1] == "ot − kd"
    assert "at least 3" in data["fits"][0]["undefined"]  # one language: the tables, but no trend
    assert (root / "out" / "trend" / "trend.png").stat().st_size > 1000
    manifest = json.loads((root / "out" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["trend"]["contrasts"] == ["ot:kd"]


def sw_student_study(tmp_path, teacher, backbone, evaluate_on: str, trend: str = ""):
    """NTREX sw and ha test, bm25-oracle, and one sw student searched on ``evaluate_on`` (a YAML list)."""
    config = tmp_path / "study.yaml"
    trend_key = f", trend: {trend}" if trend else ""
    config.write_text(f"""
name: evaluate-on
output_dir: {tmp_path / "out"}
teacher: {teacher}
collections: [{{name: ntrex, split: test, languages: [sw, ha]}}]
systems: [bm25-oracle]
students:
  - {{name: sw-kd, method: kd, backbone: {backbone}, languages: [sw], max_pairs: 24, evaluate_on: {evaluate_on},
      options: {{max_steps: 1, batch_size: 8}}}}
dev_pairs: 8
hits: 3
evaluation: {{metrics: [mrr], baselines: [], n_resamples: 200{trend_key}}}
""", encoding="utf-8")
    return load_config(config)


def test_a_student_is_searched_only_on_its_evaluate_on_languages(tmp_path, tiny_bert_dir, tiny_bert_dir_48):
    """A per-language student (evaluate_on) has runs in its languages only; the other tables go on without it."""
    run_study(sw_student_study(tmp_path, tiny_bert_dir, tiny_bert_dir_48, evaluate_on="[sw]"),
              cache_root=tmp_path / "cache")
    runs = tmp_path / "out" / "runs" / "ntrex"
    assert (runs / "sw" / "sw-kd.run").is_file() and not (runs / "ha" / "sw-kd.run").exists()
    boards = {lang: json.loads((tmp_path / "out" / "leaderboards" / f"ntrex-{lang}.json").read_text(encoding="utf-8"))
              for lang in ("sw", "ha")}
    assert set(boards["sw"]["n_queries"]) == {"bm25-oracle", "student-init", "sw-kd"}
    assert set(boards["ha"]["n_queries"]) == {"bm25-oracle", "student-init"}


def test_a_zero_shot_language_gets_its_own_trend_through_its_neighbours_students(tmp_path, tiny_bert_dir,
                                                                                  tiny_bert_dir_48):
    """``trend.zero_shot``: ha (no pairs here) is read through sw's student, in zero-shot.*, not in trend.*."""
    trend = "{start: student-init, methods: ['{lang}-kd'], zero_shot: {ha: sw}}"
    run_study(sw_student_study(tmp_path, tiny_bert_dir, tiny_bert_dir_48, evaluate_on="[sw, ha]", trend=trend),
              cache_root=tmp_path / "cache")
    out = tmp_path / "out" / "trend"
    trained, zero_shot = (json.loads((out / f"{stem}.json").read_text(encoding="utf-8")) for stem in ("trend", "zero-shot"))
    assert trained["languages"] == ["sw"] and zero_shot["languages"] == ["ha"]
    (row,) = zero_shot["rows"]
    assert (row["treatment_system"], row["control_system"]) == ("sw-kd", "student-init")
    board = json.loads((tmp_path / "out" / "leaderboards" / "ntrex-ha.json").read_text(encoding="utf-8"))
    assert row["treatment_mean"] == pytest.approx(board["means"]["sw-kd"]["mrr"])
    assert row["start_mean"] == pytest.approx(board["means"]["student-init"]["mrr"])
    assert (out / "zero-shot.png").stat().st_size > 1000


def test_a_collection_whose_corpus_is_a_directory_of_parts_runs(tmp_path, tiny_bert_dir):
    """lafand-x's corpus is a directory of gzipped parts: the runs' data hash reads the directory's files (it used
    to fail on it, after every student had trained)."""
    import gzip
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from test_collections_byo import _per_language

    root = _per_language(tmp_path / "mine")
    (root / "corpus").mkdir()
    lines = (root / "corpus.jsonl").read_bytes().splitlines(keepends=True)
    (root / "corpus" / "part-00.jsonl.gz").write_bytes(gzip.compress(b"".join(lines[:2])))
    (root / "corpus" / "part-01.jsonl.gz").write_bytes(gzip.compress(b"".join(lines[2:])))
    (root / "corpus.jsonl").unlink()
    yaml = root / "collection.yaml"
    yaml.write_text(yaml.read_text(encoding="utf-8").replace("corpus: corpus.jsonl", "corpus: corpus"),
                    encoding="utf-8")
    config = tmp_path / "study.yaml"
    config.write_text(f"""
name: parts
output_dir: {tmp_path / "out"}
teacher: {tiny_bert_dir}
collections: [{{name: {root}, split: test, languages: [sw]}}]
systems: [bm25-oracle]
hits: 3
evaluation: {{metrics: [mrr], baselines: []}}
""", encoding="utf-8")
    run_study(load_config(config), cache_root=tmp_path / "cache")
    board = json.loads((tmp_path / "out" / "leaderboards" / "mine-sw.json").read_text(encoding="utf-8"))
    assert board["means"]["bm25-oracle"]["mrr"] == 1.0
