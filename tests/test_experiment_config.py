"""Study configs: the shipped ones load, bad ones fail naming the key, sweeps expand, sweep analysis plots."""

import dataclasses
from pathlib import Path

import pandas as pd
import pytest

from clir_eval.experiment.config import load_config
from clir_eval.experiment.schema import ConfigError
from clir_eval.experiment.sweeps import student_axes, sweep_table, write_sweep_analysis

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_load(path):
    config = load_config(path)
    assert config.all_students, "every shipped study distils at least one student"
    assert all(f"student:{s.name}" in config.all_systems for s in config.all_students)


def _write(tmp_path, text):
    path = tmp_path / "study.yaml"
    path.write_text(text, encoding="utf-8")
    return path


BASE = """name: t
collections: [{name: ntrex, languages: [sw]}]
systems: [teacher]
"""


@pytest.mark.parametrize(
    "extra, message",
    [
        ("hitz: 10\n", r"study.yaml: unknown key\(s\) \['hitz'\]"),
        ("students: [{name: a, method: optimal}]\n", r"students\[0\].*method must be one of"),
        ("students: [{name: a, method: kd, max_pairs: zero}]\n", r"students\[0\]\.max_pairs"),
        ("students: [{name: a, method: kd, min_margin: 5}]\n", r"students\[0\].*min_margin must be in \(0, 2\)"),
        ("students: [{name: a, method: kd, english_pairs: -5}]\n", r"students\[0\].*english_pairs must be >= 0"),
        ("leakage: ignore\n", r"leakage: must be one of \['error', 'drop', 'allow'\]"),
        ("psq_bitext: [[lafand]]\n", r"psq_bitext\[0\]: expected a list of 2 items"),
        ("students: [{name: teacher, method: kd}]\n", r"clash with system names"),
        ("sweep: {base: {}, axes: {size: [1, 2]}}\n", r"unknown sweep axis 'size'"),
        ("evaluation: {alpha: 2}\n", r"evaluation: alpha must be in \(0, 1\)"),
        ("evaluation: {family: query}\n", r"evaluation\.family: must be one of \['table', 'metric'\]"),
        ("students: [{name: a, method: kd+ot, options: {loss: {ot_solver: exact}}}]\n",
         r"students\[0\]\.options\.loss: ot_solver must be one of \['sinkhorn', 'emd'\], got 'exact'"),
    ],
)
def test_bad_configs_name_the_key(tmp_path, extra, message):
    with pytest.raises(ConfigError, match=message):
        load_config(_write(tmp_path, BASE + extra))


def test_invalid_yaml_names_the_line(tmp_path):
    with pytest.raises(ConfigError, match=r"study.yaml:5: invalid YAML"):
        load_config(_write(tmp_path, BASE + "hits: 10\nseed: : 3\n"))


def test_sweep_expands_to_the_product_of_its_axes(tmp_path):
    config = load_config(_write(tmp_path, BASE + """sweep:
  base: {backbone: me5-small, max_pairs: 50, options: {lr: 0.001, loss: {ot_tau: 1.0}}}
  axes: {method: [kd, ot], options.loss.ot_epsilon: [0.01, 0.1]}
"""))
    students = config.all_students
    assert [s.name for s in students] == ["kd-ot_epsilon0.01", "kd-ot_epsilon0.1", "ot-ot_epsilon0.01",
                                          "ot-ot_epsilon0.1"]
    assert all(s.options["lr"] == 0.001 and s.options["loss"]["ot_tau"] == 1.0 for s in students)
    assert {(s.method, s.options["loss"]["ot_epsilon"], s.max_pairs) for s in students} == {
        ("kd", 0.01, 50), ("kd", 0.1, 50), ("ot", 0.01, 50), ("ot", 0.1, 50)}


def test_sweep_analysis_tables_and_plots(tmp_path):
    config = load_config(_write(tmp_path, BASE + """sweep:
  base: {}
  axes: {method: [kd, ot], backbone: [acme/small, acme/big]}
"""))
    students = config.all_students
    # Synthetic effectiveness: big > small, ot > kd, and the gap shrinks for the big backbone.
    rows = []
    for s in students:
        for lang, group in (("de", "high"), ("sw", "low"), ("yo", "low")):
            value = 0.3 + (0.1 if s.backbone == "acme/big" else 0) + (0.05 if s.method == "ot" else 0)
            value += (0.2 if s.backbone == "acme/small" else 0.05) if group == "high" else 0
            rows.append((s.name, "ntrex", lang, group, "mrr", value))
    rows.append(("teacher", "ntrex", "sw", "low", "mrr", 0.1))  # not a student: ignored
    results = pd.DataFrame(rows, columns=["system", "collection", "lang", "group", "metric", "value"])
    table = sweep_table(results, student_axes(students, config.sweep))
    assert len(table) == 4
    # rows (and so the plots' axes) keep the config's order of values, not the alphabet's
    assert list(dict.fromkeys(table.backbone)) == ["acme/small", "acme/big"] and list(dict.fromkeys(table.method)) == ["kd", "ot"]
    small_kd = table[(table.backbone == "acme/small") & (table.method == "kd")].iloc[0]
    assert small_kd["gap"] == pytest.approx(0.2) and small_kd["low"] == pytest.approx(0.3)
    big_ot = table[(table.backbone == "acme/big") & (table.method == "ot")].iloc[0]
    assert big_ot["gap"] == pytest.approx(0.05) and big_ot["all"] == pytest.approx((0.5 + 0.45 * 2) / 3)

    written = write_sweep_analysis(table, ["method", "backbone"], "mrr", tmp_path / "sweep")
    names = {p.name for p in written}
    assert {"sweep.csv", "ntrex-mrr-vs-backbone.png", "ntrex-gap-vs-backbone.pdf",
            "ntrex-ot-gain-by-backbone.png"} <= names
    assert all(p.stat().st_size > 1000 for p in written if p.suffix == ".png")
    with pytest.raises(ValueError, match="metric 'map' is not in the sweep table"):
        write_sweep_analysis(table, ["method"], "map", tmp_path / "other")


def test_cli_run_full_selects_the_full_config(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from clir_eval import cli
    from clir_eval.experiment import runner

    seen = []

    def fake_run_study(config, cache_root=None, command=""):
        seen.append(config)
        raise RuntimeError("stopped")  # before any work: only the choice of config is under test

    monkeypatch.setattr(runner, "run_study", fake_run_study)
    result = CliRunner().invoke(cli.app, ["run", "--full", "-o", str(tmp_path / "out")])
    assert isinstance(result.exception, RuntimeError) and str(result.exception) == "stopped"
    assert seen[0].name == load_config(Path(__file__).parents[1] / "configs" / "full.yaml").name == "full"
    assert str(seen[0].output_dir) == str(tmp_path / "out")
    both = CliRunner().invoke(cli.app, ["run", "--full", "configs/default.yaml"])
    assert both.exit_code == 2 and "not both" in both.output


def test_a_student_taught_by_its_own_backbone_has_no_fitted_start(tmp_path):
    # configs/self-teacher.yaml rests on this: with the backbone as teacher no map is fitted, so no `student-init`
    # is generated and each student is tested against the untrained backbone itself (the `teacher` system).
    config = load_config(Path(__file__).parents[1] / "configs" / "self-teacher.yaml")
    assert config.teacher == "me5-small" and {s.backbone for s in config.all_students} == {"me5-small"}
    assert config.starts == {} and not any(name.endswith("-init") for name in config.system_names)
    assert config.evaluation.baselines[0] == "teacher"
    # The same students under the MiniLM teacher get fitted starts, each a system of the study.
    text = Path(__file__).parents[1].joinpath("configs", "self-teacher.yaml").read_text(encoding="utf-8")
    mapped = load_config(_write(tmp_path, text.replace("teacher: me5-small", "teacher: minilm-l6")))
    assert mapped.starts and sum(len(specs) for specs in mapped.starts.values()) == len(config.students)
    assert all(f"student:{name}" in mapped.all_systems for name in mapped.starts)


METHODS = ("kd", "kd+ot", "ot", "kd+contrastive", "kd+ot+contrastive")
NEIGHBOURS = {"ha": ("am",), "lg": ("rw",), "zu": ("ny", "sn", "xh")}


@pytest.mark.parametrize("name", ["low-resource.yaml", "low-resource-self-teacher.yaml"])
def test_low_resource_studies_train_every_method_on_one_budget_and_evaluate_14_languages(name):
    from clir_eval.collections.bitext import bitext_languages

    config = load_config(Path(__file__).parents[1] / "configs" / name)
    trained = ("ha", "ig", "lg", "pcm", "sw", "tn", "tw", "yo", "zu")
    (ref,) = config.collections
    assert ref.name == "lafand-x" and ref.split == "test" and len(ref.languages) == 14
    students = {s.name: s for s in config.all_students}
    for lang in trained:
        specs = [students[f"{lang}-{method}"] for method in METHODS]
        assert all(s.languages == (lang,) and s.backbone == "me5-small" for s in specs)
        # searched on its own language and its zero-shot neighbours only, fixed by family
        assert {s.evaluate_on for s in specs} == {(lang, *NEIGHBOURS.get(lang, ()))}
    assert len(students) == len(trained) * len(METHODS)
    # one budget for every method and language (pairs, epochs, steps, batch; no margin filter), and one OT plan
    budgets = {(s.max_pairs, s.min_margin, s.options.get("epochs", 1), s.options.get("max_steps", 0),
                s.options.get("batch_size", 32)) for s in students.values()}
    assert budgets == {(2000, None, 2, 0, 32)}
    assert {s.options["loss"]["ot_solver"] for s in students.values() if "ot" in s.method.split("+")} == {"emd"}
    zero_shot = set(ref.languages) - set(trained)
    assert {lang for langs in NEIGHBOURS.values() for lang in langs} == zero_shot
    assert all(len(config.systems_on(lang)) == len(config.systems_on("ig")) for lang in ref.languages)
    # the self-teacher students start from the teacher itself; the MiniLM ones share one fitted start
    assert list(config.starts) == ([] if config.teacher == "me5-small" else ["student-init"])
    assert {"bm25-psq", "bm25-oracle", "oracle-dense", "hybrid", "teacher"} <= set(config.systems)
    # bm25-psq finds a bitext for every evaluated language (the loader does not check this): own train, else dev
    available = {source: bitext_languages(source) for source, _ in config.psq_bitext}
    for lang in ref.languages:
        source = next(((s, split) for s, split in config.psq_bitext if split in available[s].get(lang, ())), None)
        assert source == (("lafand", "train") if lang in trained else ("lafand", "dev")), lang
    assert config.leakage == "drop"


def test_the_ot_variants_dev_round_changes_only_ots_plan_of_the_default_kd_ot():
    """configs/dev/ot-variants.yaml (validated by loading, not run): sharper epsilons and the exact plan, each on
    the shipped KD + OT's budget and settings, on NTREX dev."""
    from clir_eval.distill.losses import LossOptions
    from clir_eval.distill.trainer import DistillConfig

    root = Path(__file__).parents[1] / "configs"
    config = load_config(root / "dev" / "ot-variants.yaml")
    shipped = {s.name: s for s in load_config(root / "default.yaml").students}["kd+ot"]
    (ref,) = config.collections
    assert ref.name == "ntrex" and ref.split == "dev"
    students = {s.name: s for s in config.students}
    changes = {"kd+ot": {}, "kd+ot-eps0.01": {"ot_epsilon": 0.01, "ot_max_iter": 2000},
               "kd+ot-eps0.005": {"ot_epsilon": 0.005, "ot_max_iter": 4000}, "kd+ot-emd": {"ot_solver": "emd"}}
    for name, change in changes.items():
        spec = students[name]
        assert dataclasses.replace(spec, name=shipped.name, options={}) == dataclasses.replace(shipped, options={})
        assert {k: v for k, v in spec.options.items() if k != "loss"} == \
            {k: v for k, v in shipped.options.items() if k != "loss"}
        assert spec.options["loss"] == {**shipped.options["loss"], **change}
        loss = LossOptions.from_dict(spec.options["loss"])  # what the trainer would be given
        DistillConfig(method=spec.method, student="s", loss=loss)
