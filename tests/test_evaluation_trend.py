"""Gain against the start across languages (clir_eval.evaluation.trend) and the `clir-eval trend` command."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from clir_eval.cli import app
from clir_eval.evaluation.significance import bootstrap_ci, correct_p_values
from clir_eval.evaluation.trend import TrendConfig, parse_system, trend_analysis
from clir_eval.retrieval.runs import write_run

from test_evaluation_report import make_runs, write_qrels

LANGS = ("ha", "ig", "lg", "pcm", "sw", "tn", "tw", "yo", "zu")
CONFIG = TrendConfig(seed=7, n_resamples=2_000)


def synthetic(trend: float, seed: int = 0, n: int = 300) -> dict[str, dict[str, np.ndarray]]:
    """Nine languages whose start means run from .3 to .9; KD adds .02; OT - KD = .03 + trend * (.6 - x)."""
    rng = np.random.default_rng(seed)
    scores = {}
    for lang, x in zip(LANGS, np.linspace(0.3, 0.9, len(LANGS))):
        start = x + rng.normal(0, 0.15, n)
        kd = start + 0.02 + rng.normal(0, 0.1, n)
        ot = kd + 0.03 + trend * (0.6 - x) + rng.normal(0, 0.1, n)
        scores[lang] = {"start": start, "kd": kd, "kd+ot": ot}
    return scores


def analyse(scores, config=CONFIG, **kwargs):
    return trend_analysis(scores, start="start", methods=["kd", "kd+ot"], contrasts=[("kd+ot", "kd")],
                          config=config, **kwargs)


def test_ot_minus_kd_growing_as_the_start_weakens_gives_a_negative_slope():
    result = analyse(synthetic(trend=0.2))
    fit = result.fit("kd+ot − kd")
    assert fit.slope == pytest.approx(-0.2, abs=0.05)
    assert fit.ci_low < fit.slope < fit.ci_high < 0
    assert fit.p_value < 0.05 and fit.significant
    assert fit.spearman_rho < -0.8 and fit.spearman_p < 0.05
    assert not fit.exact and fit.permutations == 2_000  # 9! orders are more than the resamples
    assert result.languages == LANGS  # weakest start first
    # the per-language x is the start's mean, y the mean difference
    row = result.row("ha", "kd+ot − kd")
    scores = synthetic(trend=0.2)["ha"]
    assert row.start_mean == pytest.approx(scores["start"].mean())
    assert row.difference == pytest.approx((scores["kd+ot"] - scores["kd"]).mean())


def test_without_a_trend_the_interval_covers_zero():
    fit = analyse(synthetic(trend=0.0, seed=1)).fit("kd+ot − kd")
    assert fit.ci_low < 0 < fit.ci_high
    assert fit.p_value > 0.05 and not fit.significant


def test_same_seed_same_numbers_other_seed_other_intervals():
    scores = synthetic(trend=0.1)
    first, again = analyse(scores).to_dict(), analyse(scores).to_dict()
    assert first == again
    other = analyse(scores, config=dataclasses.replace(CONFIG, seed=8)).to_dict()
    assert other["fits"][2]["ci_low"] != first["fits"][2]["ci_low"]
    assert other["rows"][0]["p_value"] != first["rows"][0]["p_value"]
    assert other["fits"][2]["slope"] == first["fits"][2]["slope"]  # the estimate itself is not random


def test_holm_over_the_languages_of_each_effect_is_the_projects_holm():
    result = analyse(synthetic(trend=0.1))
    for effect in result.effects:
        rows = [result.row(lang, effect.name) for lang in result.languages]
        expected = correct_p_values([r.p_value for r in rows], "holm")
        assert [r.p_adjusted for r in rows] == list(expected)
        assert [r.significant for r in rows] == [bool(p <= 0.05) for p in expected]
    fits = result.fits
    assert [f.p_adjusted for f in fits] == list(correct_p_values([f.p_value for f in fits], "holm"))


def test_a_languages_interval_is_the_projects_bootstrap_of_its_differences():
    from clir_eval.evaluation.trend import _seed

    scores = synthetic(trend=0.1)
    result = analyse(scores)
    diff = scores["sw"]["kd+ot"] - scores["sw"]["kd"]
    ci = bootstrap_ci(diff, seed=_seed(CONFIG.seed, "sw"), n_resamples=CONFIG.n_resamples)
    row = result.row("sw", "kd+ot − kd")
    assert (row.ci_low, row.ci_high) == pytest.approx((ci.low, ci.high), abs=1e-12)
    # and a language's numbers do not depend on the other languages analysed
    alone = analyse({lang: scores[lang] for lang in ("sw", "ha", "zu")}).row("sw", "kd+ot − kd")
    assert (alone.ci_low, alone.p_value) == (row.ci_low, row.p_value)


def test_few_languages_are_permuted_exactly():
    # four languages, y exactly linear in x: only the identity and the reversed order reach |slope|
    rng = np.random.default_rng(1)
    scores = {}
    for lang, x in zip("abcd", (0.2, 0.4, 0.6, 0.8)):
        start = x + rng.normal(0, 0.01, 50)
        start += x - start.mean()
        gain = rng.normal(0, 0.01, 50)
        gain += (1 - x) - gain.mean()
        scores[lang] = {"start": start, "kd": start + gain}
    result = trend_analysis(scores, start="start", methods=["kd"], config=TrendConfig(n_resamples=100))
    fit = result.fit("kd − start")
    assert fit.exact and fit.permutations == 24
    assert fit.slope == pytest.approx(-1.0)
    assert fit.p_value == pytest.approx(2 / 24)
    assert fit.spearman_rho == pytest.approx(-1.0) and fit.spearman_p == pytest.approx(2 / 24)


def test_two_languages_give_no_trend_and_say_why():
    scores = synthetic(trend=0.1)
    result = analyse({lang: scores[lang] for lang in ("ha", "sw")})
    fit = result.fit("kd+ot − kd")
    assert np.isnan(fit.slope) and "at least 3" in fit.undefined
    assert any("at least 3" in line for line in result.legend)


def test_labels_come_from_templates_and_names_are_escaped_in_markdown():
    assert parse_system("{lang}-kd+ot") == ("kd+ot", "{lang}-kd+ot")
    assert parse_system("student-init") == ("student-init", "student-init")
    assert parse_system("ot=multi-kd+ot") == ("ot", "multi-kd+ot")
    scores = {lang: {"start": v["start"], "a|<b>": v["kd"]} for lang, v in synthetic(0.1, n=30).items()}
    text = trend_analysis(scores, start="start", methods=["a|<b>"], config=TrendConfig(n_resamples=50)).to_markdown()
    assert "a\\|&lt;b&gt; − start" in text and "a|<b>" not in text


# ---- the command -------------------------------------------------------------------------------------------
def tiny_results(tmp_path):
    """runs/lafand-x/<lang>/{student-init,<lang>-kd,<lang>-kd+ot}.run for three languages, qrels per language."""
    root = tmp_path / "results"
    for i, (lang, typical) in enumerate((("ha", 8), ("sw", 2), ("yo", 5))):
        quality = {"student-init": typical, f"{lang}-kd": typical * 0.9, f"{lang}-kd+ot": typical * 0.7}
        qrels, runs = make_runs(i, quality=quality)
        write_qrels(root / "runs" / "lafand-x" / lang / "qrels.txt", qrels)
        for system, run in runs.items():
            write_run(root / "runs" / "lafand-x" / lang / f"{system}.run", run, tag=system)
    return root


def test_cli_writes_the_tables_and_the_plot_with_per_language_students(tmp_path):
    root = tiny_results(tmp_path)
    out = tmp_path / "trend"
    result = CliRunner().invoke(app, ["trend", str(root), "--start", "student-init", "--method", "{lang}-kd",
                                      "--method", "{lang}-kd+ot", "--contrast", "kd+ot:kd", "-m", "mrr",
                                      "--resamples", "200", "--out", str(out)])
    assert result.exit_code == 0, result.output
    for name in ("trend.md", "trend.csv", "trend.json", "trend.png", "trend-fit.csv"):
        assert (out / name).stat().st_size > 0, name
    data = json.loads((out / "trend.json").read_text())
    assert data["metric"] == "mrr" and sorted(data["languages"]) == ["ha", "sw", "yo"]
    assert [e["name"] for e in data["effects"]] == ["kd − student-init", "kd+ot − student-init", "kd+ot − kd"]
    sw = next(r for r in data["rows"] if r["lang"] == "sw" and r["effect"] == "kd+ot − kd")
    assert (sw["treatment_system"], sw["control_system"]) == ("sw-kd+ot", "sw-kd")
    assert data["languages"][0] == "ha"  # the weakest start (relevant document ranked lowest)
    assert "kd+ot − kd" in (out / "trend.md").read_text()


def reciprocal_ranks(run: dict, qrels: dict) -> np.ndarray:
    """1 / rank of each query's one relevant document (the runs of make_runs have no ties)."""
    ranks = []
    for query, judged in sorted(qrels.items()):
        relevant = next(doc for doc, grade in judged.items() if grade > 0)
        ranked = sorted(run[query], key=run[query].get, reverse=True)
        ranks.append(1 / (ranked.index(relevant) + 1) if relevant in ranked else 0.0)
    return np.array(ranks)


def test_cli_reads_a_zero_shot_language_through_a_trained_languages_students(tmp_path):
    root = tiny_results(tmp_path)
    qrels, runs = make_runs(3, quality={"student-init": 6, "ha-kd": 2, "ha-kd+ot": 9})
    write_qrels(root / "runs" / "lafand-x" / "am" / "qrels.txt", qrels)
    for system, run in runs.items():  # ha's students searched on am's queries
        write_run(root / "runs" / "lafand-x" / "am" / f"{system}.run", run, tag=system)
    out = tmp_path / "zero-shot"
    args = ["trend", str(root), "--start", "student-init", "--method", "{lang}-kd", "--method", "{lang}-kd+ot",
            "--contrast", "kd+ot:kd", "--lang", "am", "--resamples", "200", "--out", str(out)]
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 2 and "'am-kd'" in refused.output and not out.exists()
    result = CliRunner().invoke(app, args + ["--via", "am=ha"])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "trend.json").read_text())
    assert data["languages"] == ["am"] and "am through ha" in data["title"]
    rows = {r["effect"]: r for r in data["rows"]}
    gain, contrast = rows["kd − student-init"], rows["kd+ot − kd"]
    assert (gain["treatment_system"], contrast["treatment_system"]) == ("ha-kd", "ha-kd+ot")
    rr = {system: reciprocal_ranks(run, qrels) for system, run in runs.items()}
    assert gain["start_mean"] == pytest.approx(rr["student-init"].mean())
    assert gain["difference"] == pytest.approx((rr["ha-kd"] - rr["student-init"]).mean())
    assert contrast["difference"] == pytest.approx((rr["ha-kd+ot"] - rr["ha-kd"]).mean()) and contrast["difference"] < 0
    bad = CliRunner().invoke(app, args + ["--via", "am"])
    assert bad.exit_code == 2 and "error: --via 'am'" in bad.output


def test_cli_names_every_missing_system_and_writes_nothing(tmp_path):
    root = tiny_results(tmp_path)
    out = tmp_path / "trend"
    result = CliRunner().invoke(app, ["trend", str(root), "--start", "student-init", "--method", "{lang}-ot",
                                      "--contrast", "ot:kd", "--out", str(out)])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert any("'ha-ot'" in line for line in errors) and any("'yo-ot'" in line for line in errors)
    assert any("'kd'" in line and "contrast" in line for line in errors)
    assert not out.exists()


# ---- the study key -------------------------------------------------------------------------------------------
STUDY = """name: t
collections: [{{name: ntrex, languages: [sw, ha]}}]
systems: [teacher]
students:
  - {{name: sw-kd, method: kd, languages: [sw], max_pairs: 100}}
  - {{name: sw-kd+ot, method: kd+ot, languages: [sw], max_pairs: 100}}
evaluation: {{trend: {trend}}}
"""


def test_a_study_trend_names_systems_of_the_study_on_each_language(tmp_path):
    from clir_eval.experiment.config import load_config
    from clir_eval.experiment.schema import ConfigError

    path = tmp_path / "study.yaml"
    path.write_text(STUDY.format(trend="{start: teacher, methods: ['{lang}-kd', '{lang}-kd+ot'], "
                                       "contrasts: ['kd+ot:kd'], languages: [sw]}"), encoding="utf-8")
    trend = load_config(path).evaluation.trend
    assert (trend.methods, trend.contrasts, trend.languages) == (("{lang}-kd", "{lang}-kd+ot"), ("kd+ot:kd",), ("sw",))
    path.write_text(STUDY.format(trend="{start: teacher, methods: ['{lang}-kd'], contrasts: ['kd+ot:kd']}"),
                    encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    text = "\n".join(caught.value.errors)
    assert "'kd+ot' is not a label" in text
    path.write_text(STUDY.format(trend="{start: teacher, methods: ['{lang}-kd']}"), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"evaluation.trend.methods\[0\]: '\{lang\}-kd' names no system of the "
                                          r"study that searches ha \('ha-kd'\)"):
        load_config(path)


ZERO_SHOT_STUDY = """name: t
collections: [{{name: ntrex, languages: [sw, ha]}}]
systems: [teacher]
students:
  - {{name: sw-kd, method: kd, languages: [sw], max_pairs: 100, evaluate_on: {evaluate_on}}}
evaluation: {{trend: {{start: teacher, methods: ['{{lang}}-kd'], languages: [sw], zero_shot: {{ha: sw}}}}}}
"""


def test_a_zero_shot_language_must_be_searched_by_the_students_it_is_read_through(tmp_path):
    from clir_eval.experiment.config import load_config
    from clir_eval.experiment.schema import ConfigError

    path = tmp_path / "study.yaml"
    path.write_text(ZERO_SHOT_STUDY.format(evaluate_on="[sw, ha]"), encoding="utf-8")
    assert load_config(path).evaluation.trend.zero_shot == {"ha": "sw"}
    # sw-kd does not search ha's queries, so ha cannot be read through it
    path.write_text(ZERO_SHOT_STUDY.format(evaluate_on="[sw]"), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"evaluation.trend.methods\[0\]: .* searches ha \('sw-kd'\); "
                                          r"restrict evaluation.trend.zero_shot"):
        load_config(path)
    path.write_text(ZERO_SHOT_STUDY.format(evaluate_on="[sw, ha]").replace("{ha: sw}", "{sw: ha}"), encoding="utf-8")
    with pytest.raises(ConfigError, match="'sw' is in both languages and zero_shot"):
        load_config(path)


def test_the_trend_never_imports_torch(tmp_path):
    import subprocess
    import sys

    root = tiny_results(tmp_path)
    code = (
        "import sys\n"
        "from clir_eval.evaluation.manifest import read_results\n"
        "from clir_eval.evaluation.plots import trend_figure\n"
        "from clir_eval.evaluation.trend import TrendConfig, trend_from_results\n"
        f"a = trend_from_results(read_results({str(root)!r}), start='student-init', methods=['{{lang}}-kd'],\n"
        "                       config=TrendConfig(n_resamples=50))\n"
        f"a.save({str(tmp_path)!r}); trend_figure(a)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
