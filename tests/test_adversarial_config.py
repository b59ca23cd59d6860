"""Everything checked before the first expensive step (issue 31, item 4): output paths, metric cutoffs, numbers
in configs, every problem of a config at once, and YAML alias bombs refused with a short message.

As root every path is writable: an unwritable directory is simulated by patching ``os.access``, and the
pseudo-filesystems by paths under /proc and /sys.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clir_eval import cli
from clir_eval.experiment.config import ExperimentConfig, load_config
from clir_eval.experiment.schema import ConfigError, from_mapping
from clir_eval.io import InputFileError, check_output_path

STUDY = """name: t
collections: [{name: ntrex, languages: [sw]}]
systems: [teacher]
students: [{name: kd, method: kd, languages: [sw], max_pairs: 100}]
"""


def invoke(*args: object):
    return CliRunner().invoke(cli.app, [str(a) for a in args])


def error_lines(result) -> list[str]:
    """The `error:` lines of a user error (exit code 2, no traceback)."""
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    return [line for line in result.output.splitlines() if line.startswith("error: ")]


def write_study(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def unwritable(monkeypatch, *directories: Path) -> None:
    """``os.access`` says no to writing in ``directories`` (root may write anywhere)."""
    real = os.access
    refused = {Path(d).resolve() for d in directories}

    def access(path, mode, *args, **kwargs):
        if mode & os.W_OK and Path(path).resolve() in refused:
            return False
        return real(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)


@pytest.fixture()
def no_study(monkeypatch):
    from clir_eval.experiment import runner

    def refuse(*args, **kwargs):
        raise AssertionError("the study started although its config is bad")

    monkeypatch.setattr(runner, "run_study", refuse)


# ---- the done-when: three problems, three lines, nothing done ----------------------------------------


def test_run_reports_an_unwritable_output_dir_a_bad_metric_and_a_string_lr_together(tmp_path, monkeypatch, no_study):
    locked = tmp_path / "locked"
    locked.mkdir()
    unwritable(monkeypatch, locked)
    config = write_study(tmp_path, STUDY.replace("max_pairs: 100}", "max_pairs: 100, options: {lr: 1e-5x}}")
                         + f"output_dir: {locked / 'out'}\nevaluation: {{metrics: [mrr, recall@99999999999999999999]}}\n")
    before = sorted(tmp_path.rglob("*"))
    errors = error_lines(invoke("run", config, "--cache-dir", tmp_path / "cache"))
    assert len(errors) == 3, errors
    assert any("output_dir" in line and str(locked / "out") in line and "not writable" in line for line in errors)
    assert any("evaluation.metrics[1]" in line and "2147483647" in line for line in errors)
    assert any("students[0].options.lr" in line and "'1e-5x'" in line for line in errors)
    assert sorted(tmp_path.rglob("*")) == before  # no output, no cache


def test_run_from_the_command_line_stops_with_three_errors_and_creates_nothing(tmp_path):
    """The same through a real process, with the output directory under /proc."""
    config = write_study(tmp_path, STUDY.replace("max_pairs: 100}", "max_pairs: 100, options: {lr: 1e-5x}}")
                         + "output_dir: /proc/clir-eval-out\nevaluation: {metrics: [recall@99999999999999999999]}\n")
    before = sorted(tmp_path.rglob("*"))
    done = subprocess.run([sys.executable, "-m", "clir_eval.cli", "run", str(config), "--cache-dir",
                           str(tmp_path / "cache")], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert done.returncode == 2 and len(errors) == 3, done.stderr
    assert "Traceback" not in done.stderr
    assert any("/proc/clir-eval-out" in line and "pseudo-filesystem" in line for line in errors)
    assert sorted(tmp_path.rglob("*")) == before


# ---- every problem at once ------------------------------------------------------------------------------------


def test_four_problems_give_four_error_lines_each_naming_its_key(tmp_path, no_study):
    config = write_study(tmp_path, STUDY.replace("max_pairs: 100}", "max_pairs: 100, options: {lr: abc}}")
                         + "hits: 0\nevaluation: {alpha: 2, metrics: [recall@0]}\n")
    errors = error_lines(invoke("run", config, "-o", tmp_path / "out"))
    assert len(errors) == 4, errors
    for fragment in ("hits must be >= 1", "alpha must be in (0, 1)", "evaluation.metrics[0]",
                     "students[0].options.lr"):
        assert sum(fragment in line for line in errors) == 1, (fragment, errors)
    assert not (tmp_path / "out").exists()


def test_from_mapping_reports_every_bad_field_not_only_the_first():
    with pytest.raises(ConfigError) as caught:
        from_mapping(ExperimentConfig, {"name": "t", "collections": [{"name": "x", "languages": ["sw"], "split": 5}],
                                        "systems": ["teacher"], "hits": "many", "seed": "x", "threads": -1,
                                        "hitz": 1})
    errors = caught.value.errors
    assert len(errors) == 5, errors
    for fragment in ("collections[0].split: expected str", ".hits: expected int", ".seed: expected int",
                     "threads must be >= 0", "unknown key(s) ['hitz']"):
        assert any(fragment in line for line in errors), (fragment, errors)


# ---- numbers ----------------------------------------------------------------------------------------------------


def test_a_learning_rate_yaml_reads_as_a_string_is_the_number(tmp_path):
    """PyYAML (YAML 1.1) reads ``1e-5`` as the string '1e-5'; the study trains with lr 1e-5."""
    from clir_eval.experiment.runner import StudyRunner

    config = load_config(write_study(tmp_path, STUDY.replace("max_pairs: 100}",
                                                             "max_pairs: 1e3, options: {lr: 1e-5}}")))
    assert config.students[0].max_pairs == 1000
    distill = StudyRunner(config, cache_root=tmp_path / "cache").distill_config(config.students[0])
    assert distill.lr == 1e-5 and isinstance(distill.lr, float)


@pytest.mark.parametrize("option, key", [("lr: .inf", "options.lr"), ("lr: .nan", "options.lr"),
                                         ("max_grad_norm: .inf", "options.max_grad_norm"),
                                         ("loss: {ot_epsilon: .nan}", "options.loss.ot_epsilon")])
def test_non_finite_options_are_refused_naming_the_key(tmp_path, no_study, option, key):
    config = write_study(tmp_path, STUDY.replace("max_pairs: 100}", f"max_pairs: 100, options: {{{option}}}}}"))
    errors = error_lines(invoke("run", config, "-o", tmp_path / "out"))
    assert len(errors) == 1 and f"students[0].{key}" in errors[0] and "finite" in errors[0], errors


# ---- metric cutoffs ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["recall@99999999999999999999", "ndcg@2147483648", "recall@0", "recall@1.5",
                                    "recall@1_0", "recall@\u0669", "recall@" + "9" * 5000])
def test_metric_cutoffs_out_of_bounds_are_refused_at_validation(tmp_path, no_study, metric):
    config = write_study(tmp_path, STUDY + f"evaluation: {{metrics: ['{metric}']}}\n")
    errors = error_lines(invoke("run", config, "-o", tmp_path / "out"))
    assert len(errors) == 1 and "evaluation.metrics[0]" in errors[0] and "from 1 to 2147483647" in errors[0]
    assert len(errors[0]) < 400  # the 5,000-digit name is cut in the message


def test_the_largest_cutoff_is_accepted_and_evaluates():
    from clir_eval.evaluation.evaluate import evaluate_runs

    result = evaluate_runs({"q1": {"d1": 1, "d2": 1}}, {"a": {"q1": {"d1": 2.0, "d3": 1.0}}}, ["recall@2147483647"])
    assert result.means["a"]["recall@2147483647"] == 0.5


def test_evaluate_refuses_a_huge_cutoff(tmp_path):
    (tmp_path / "qrels.txt").write_text("q1 0 d1 1\n", encoding="utf-8")
    (tmp_path / "a.run").write_text("q1 Q0 d1 1 1.0 t\n", encoding="utf-8")
    errors = error_lines(invoke("evaluate", tmp_path / "a.run", "--qrels", tmp_path / "qrels.txt",
                                "-m", "recall@99999999999999999999"))
    assert any("the cutoff must be an integer from 1 to 2147483647" in line for line in errors), errors


# ---- output paths -----------------------------------------------------------------------------------------------


def test_output_dir_that_is_a_file_stops_the_study_at_load(tmp_path, no_study):
    existing = tmp_path / "results"
    existing.write_text("not a directory", encoding="utf-8")
    errors = error_lines(invoke("run", write_study(tmp_path, STUDY), "-o", existing))
    assert errors == [f"error: {tmp_path / 'study.yaml'}: output_dir: {existing}: is a file; give a directory to "
                      f"write into"]


def test_a_cache_dir_that_is_a_file_is_refused_with_the_config_problems(tmp_path, no_study):
    cache = tmp_path / "cache"
    cache.write_text("", encoding="utf-8")
    errors = error_lines(invoke("run", write_study(tmp_path, STUDY + "hits: 0\n"), "-o", tmp_path / "out",
                                "--cache-dir", cache))
    assert len(errors) == 2 and errors[0].startswith(f"error: --cache-dir: {cache}: is a file"), errors


def test_search_to_proc_fails_before_searching_naming_the_given_path(monkeypatch):
    from clir_eval.retrieval import systems

    def refuse(*args, **kwargs):
        raise AssertionError("searched although the run cannot be written")

    monkeypatch.setattr(systems, "run_system", refuse)
    errors = error_lines(invoke("search", "-s", "bm25-psq", "-c", "ntrex", "-l", "sw", "--out", "/proc/x.run"))
    assert errors == ["error: /proc/x.run: lies on a pseudo-filesystem (proc); give a path on disk"]


def test_index_into_an_unwritable_directory_fails_before_indexing(tmp_path, monkeypatch):
    from clir_eval.retrieval import bm25

    def refuse(*args, **kwargs):
        raise AssertionError("indexed although the index cannot be written")

    monkeypatch.setattr(bm25, "build_lucene_index", refuse)
    unwritable(monkeypatch, tmp_path)
    errors = error_lines(invoke("index", "lucene", "-c", "ntrex", "--out", tmp_path / "lucene"))
    assert len(errors) == 1 and str(tmp_path / "lucene") in errors[0] and "not writable" in errors[0], errors


def test_distill_whose_checkpoint_dir_is_a_file_fails_before_training(tmp_path, monkeypatch):
    from clir_eval.distill import trainer

    def refuse(*args, **kwargs):
        raise AssertionError("trained although the checkpoints cannot be written")

    monkeypatch.setattr(trainer, "distill", refuse)
    (tmp_path / "student.checkpoints").write_text("", encoding="utf-8")
    errors = error_lines(invoke("distill", "--method", "kd", "--student", "minilm-l6", "--lang", "sw",
                                "--out", tmp_path / "student"))
    assert errors == [f"error: {tmp_path / 'student.checkpoints'}: is a file; give a directory to write into"]


@pytest.mark.parametrize("command", [["compare", "--baseline", "a", "--out", "/sys/clir-eval-out"],
                                     ["report", "--out", "/proc/report.html"]])
def test_compare_and_report_outputs_on_pseudo_filesystems_are_refused_first(tmp_path, command):
    (tmp_path / "qrels.txt").write_text("q1 0 d1 1\n", encoding="utf-8")
    (tmp_path / "a.run").write_text("q1 Q0 d1 1 1.0 t\n", encoding="utf-8")
    if command[0] == "compare":
        args = ["compare", tmp_path / "a.run", "--qrels", tmp_path / "qrels.txt", *command[1:]]
    else:
        args = ["report", tmp_path, *command[1:]]
    errors = error_lines(invoke(*args))
    assert len(errors) == 1 and command[-1] in errors[0] and "pseudo-filesystem" in errors[0], errors


@pytest.mark.parametrize("path, directory, message", [
    ("/proc/x.run", False, r"pseudo-filesystem \(proc\)"),
    ("/sys/kernel/clir/out", True, r"pseudo-filesystem \(sysfs\)"),
    ("/dev/stdout", False, "pseudo-filesystem"),
])
def test_check_output_path_refuses_pseudo_filesystems(path, directory, message):
    with pytest.raises(InputFileError, match=message) as caught:
        check_output_path(path, directory=directory)
    assert caught.value.path == path


def test_check_output_path_refuses_unwritable_parents_and_accepts_new_nested_dirs(tmp_path, monkeypatch):
    assert check_output_path(tmp_path / "a" / "b" / "c", directory=True) == tmp_path / "a" / "b" / "c"
    unwritable(monkeypatch, tmp_path)
    with pytest.raises(InputFileError, match=rf"would be created in {tmp_path}, which is not writable"):
        check_output_path(tmp_path / "a" / "b" / "c", directory=True)
    with pytest.raises(InputFileError, match=r"^.*x\.run: would be created in"):
        check_output_path(tmp_path / "x.run")
    with pytest.raises(InputFileError, match=r": is not writable"):
        check_output_path(tmp_path, directory=True)


# ---- YAML alias bombs -------------------------------------------------------------------------------------------


def _bomb(levels: int) -> str:
    """``hits:`` as a list of anchored lists, each of nine aliases of the one before: ``levels`` lines of text,
    9**levels values once the last is expanded."""
    lines = ["hits:", "  - &l0 [1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    lines += [f"  - &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_in_a_config_is_refused_at_load_with_a_short_message(tmp_path):
    config = write_study(tmp_path, STUDY + _bomb(7))  # 4.8 million values
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    assert len(caught.value.errors) == 1 and len(str(caught.value)) < 300, str(caught.value)[:300]
    assert "study.yaml:" in str(caught.value) and "alias bomb" in str(caught.value)


def test_a_self_referring_list_is_refused_at_load(tmp_path, no_study):
    """PyYAML builds a list that holds itself (a mapping it refuses); no setting can be one."""
    errors = error_lines(invoke("run", write_study(tmp_path, STUDY + "hits: &h [1, *h]\n"), "-o", tmp_path / "o"))
    assert len(errors) == 1 and "refers to the value that holds it" in errors[0], errors


def _nested(levels: int) -> list:
    value: list = [1] * 9
    for _ in range(levels):
        value = [value] * 9
    return value


@pytest.mark.parametrize("extra", [
    {"hits": _nested(6)},
    {"sweep": {"base": {"method": "kd"}, "axes": {"options.lr": [_nested(6), 1e-5]}}},
    {"sweep": {"base": {"method": "kd"}, "axes": {"method": _nested(6)}}},
])
def test_a_structure_in_a_message_is_cut_short(extra):
    """Past the loader (a structure built in code), a refused value is shown cut to a few items."""
    from clir_eval.experiment.schema import build

    built = build(ExperimentConfig, {"name": "t", "collections": [{"name": "ntrex", "languages": ["sw"]}],
                                     "systems": ["teacher"], **extra}, where="c")
    assert len(built.errors) == 1 and len(built.errors[0]) < 300, built.errors


def test_short_repr_caps_length_depth_and_huge_integers():
    from clir_eval.io import short_repr

    assert short_repr({"a": [1, 2]}) == "{'a': [1, 2]}"
    assert len(short_repr("x" * 10_000)) <= 80
    assert len(short_repr(_nested(30))) <= 80
    assert short_repr(10**5000) == "<int of 16610 bits>"
