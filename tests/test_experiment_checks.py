"""The study checks against the registries: what they accept (the shipped configs load in
test_experiment_config.py; what they refuse is probed through the CLI in test_adversarial.py)."""

import pytest

from clir_eval.experiment.config import load_config
from clir_eval.experiment.schema import ConfigError


def _load(tmp_path, text):
    path = tmp_path / "study.yaml"
    path.write_text(text, encoding="utf-8")
    return load_config(path)


def test_system_names_are_run_names_and_students_by_their_config_name(tmp_path):
    student_dir = tmp_path / "students" / "kd-sw"
    student_dir.mkdir(parents=True)
    translations = tmp_path / "nllb.tsv"
    translations.write_text("q1\tcat\n", encoding="utf-8")
    config = _load(tmp_path, f"""name: t
collections: [{{name: ntrex, languages: [sw]}}]
systems: [bm25-psq, "bm25-translated:{translations}", "student:{student_dir}", hybrid]
students: [{{name: ot, method: ot, languages: [sw], max_pairs: 100}}]
hybrid: {{sparse: "bm25-translated:{translations}", dense: ot}}
evaluation: {{baselines: [bm25-translated-nllb, student-kd-sw, ot]}}
""")
    assert config.system_names == {
        "bm25-psq": "bm25-psq", "bm25-translated-nllb": f"bm25-translated:{translations}",
        "student-kd-sw": f"student:{student_dir}", "hybrid": "hybrid", "student-init": "student:student-init",
        "ot": "student:ot"}


def test_hybrid_components_must_be_of_the_right_family(tmp_path):
    with pytest.raises(ConfigError, match=r"hybrid.dense: 'bm25-psq' is not a dense system"):
        _load(tmp_path, """name: t
collections: [{name: ntrex, languages: [sw]}]
systems: [bm25-psq, teacher, hybrid]
hybrid: {dense: bm25-psq}
""")


def test_a_local_model_directory_and_a_hub_id_are_valid_backbones(tmp_path):
    model = tmp_path / "my-model"
    model.mkdir()
    config = _load(tmp_path, f"""name: t
collections: [{{name: ntrex, languages: [sw]}}]
systems: [teacher]
teacher: {model}
students: [{{name: a, method: kd, backbone: intfloat/multilingual-e5-small}}]
""")
    assert config.teacher == str(model) and config.students[0].backbone == "intfloat/multilingual-e5-small"


def test_evaluate_on_names_query_languages_of_the_study_and_no_hybrid_component(tmp_path):
    with pytest.raises(ConfigError) as refused:
        _load(tmp_path, """name: t
collections: [{name: ntrex, languages: [sw, ha]}]
systems: [bm25-psq, hybrid]
students: [{name: kd, method: kd, languages: [sw], max_pairs: 100, evaluate_on: [sw, yo]}]
hybrid: {sparse: bm25-psq, dense: kd}
""")
    errors = "\n".join(refused.value.errors)
    assert "students[0].evaluate_on[1]: 'yo' is not a query language of the study" in errors
    assert "hybrid.dense: 'kd' runs only on its evaluate_on languages" in errors
    config = _load(tmp_path, """name: t
collections: [{name: ntrex, languages: [sw, ha]}]
systems: [bm25-psq]
students: [{name: kd, method: kd, languages: [sw], max_pairs: 100, evaluate_on: [sw]},
           {name: ot, method: ot, languages: [sw], max_pairs: 100}]
evaluation: {baselines: []}
""")
    assert config.systems_on("sw") == ("bm25-psq", "student:student-init", "student:kd", "student:ot")
    assert config.systems_on("ha") == ("bm25-psq", "student:student-init", "student:ot")


def test_a_dense_index_factory_faiss_cannot_build_is_refused_at_load_naming_its_key(tmp_path, tiny_bert_dir):
    """Checked at the teacher's dimension when the config loads, not when the index is built after training."""
    study = f"""name: t
collections: [{{name: ntrex, languages: [sw]}}]
systems: [teacher]
teacher: {tiny_bert_dir}
dense_index: {{factory: "IVF2,PQ5", nprobe: 2}}
"""
    with pytest.raises(ConfigError, match=r"dense_index.factory: Faiss index_factory cannot build 'IVF2,PQ5' for "
                                          r"32-d vectors"):
        _load(tmp_path, study)
    with pytest.raises(ConfigError, match=r"dense_index: unknown key\(s\) \['nprobes'\]"):
        _load(tmp_path, study.replace("IVF2,PQ5", "IVF2,PQ4").replace("nprobe:", "nprobes:"))
    assert _load(tmp_path, study.replace("IVF2,PQ5", "IVF2,PQ4")).dense_index == {"factory": "IVF2,PQ4", "nprobe": 2}


def test_a_dense_index_backend_that_cannot_run_is_refused_at_load_naming_its_key(tmp_path, monkeypatch):
    """An unknown backend, or openvino where its package is missing, fails when the config loads, not when the
    index is built after the students have trained."""
    from clir_eval.models import openvino_backbone

    study = """name: t
collections: [{name: ntrex, languages: [sw]}]
systems: [teacher]
dense_index: {backend: onnx}
"""
    with pytest.raises(ConfigError, match=r"dense_index.*backend must be one of torch, openvino, got 'onnx'"):
        _load(tmp_path, study)
    monkeypatch.setattr(openvino_backbone, "openvino_missing", lambda: "the openvino backend needs the openvino package")
    with pytest.raises(ConfigError, match=r"dense_index.backend: the openvino backend needs the openvino package"):
        _load(tmp_path, study.replace("onnx", "openvino"))
    assert _load(tmp_path, study.replace("onnx", "torch")).dense_index == {"backend": "torch"}
