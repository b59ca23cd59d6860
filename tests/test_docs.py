"""The docs as reference: generated tables equal the regression specs, no session or commit named outside the
journal, every relative link resolves."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
REFERENCE = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]  # docs/journal/ is history: it may name both
SESSION = re.compile(r"\bsessions? \d+", re.IGNORECASE)
HEX = re.compile(r"\b[0-9a-f]{7,40}\b")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def commit_like(text: str) -> list[str]:
    """Hex tokens of 7-40 characters with both a digit and a letter a-f (what a short or full commit hash is)."""
    return [t for t in HEX.findall(text) if re.search(r"\d", t) and re.search(r"[a-f]", t)]


def test_generated_tables_equal_the_specs():
    from clir_eval.regressions_doc import stale_blocks

    text = (DOCS / "results.md").read_text(encoding="utf-8")
    assert "<!-- BEGIN GENERATED: regressions/default-study.yaml" in text
    assert stale_blocks(text) == [], "run: clir-eval regressions --doc docs/results.md"


def test_an_edited_number_is_caught():
    from clir_eval.regressions_doc import render_page, stale_blocks

    text = render_page((DOCS / "results.md").read_text(encoding="utf-8"))
    edited = text.replace("| kd+contrastive | 0.7197 |", "| kd+contrastive | 0.7198 |", 1)
    assert edited != text
    assert stale_blocks(edited) == ["regressions/self-teacher.yaml"]
    assert render_page(edited) == text  # regenerating puts the spec's number back


def test_a_block_naming_an_unknown_system_or_metric_is_an_error():
    from clir_eval.regressions import SpecError
    from clir_eval.regressions_doc import render_page

    with pytest.raises(SpecError, match="nope"):
        render_page("<!-- BEGIN GENERATED: regressions/ntrex.yaml:nope -->\n<!-- END GENERATED -->\n")
    with pytest.raises(SpecError, match="map@5"):
        render_page("<!-- BEGIN GENERATED: regressions/ntrex.yaml metric=map@5 -->\n<!-- END GENERATED -->\n")


def test_a_lang_row_reads_each_languages_own_student_and_zero_shot_ones_through_via(tmp_path, monkeypatch):
    """``{lang}-kd`` is one row for the per-language students; via=am:ha fills am's cell with ha-kd on am."""
    import clir_eval.regressions as regressions
    from clir_eval.regressions import SpecError
    from clir_eval.regressions_doc import render_page

    def entry(mrr):
        return {"scores": {"mrr": mrr}, "date": "2026-12-06", "commit": "x", "versions": {}}

    import yaml

    (tmp_path / "study.yaml").write_text(yaml.safe_dump({
        "description": "a per-language study", "collection": "ntrex", "split": "test",
        "command": "clir-eval run x.yaml --output-dir {out}",
        "run": "{out}/{lang}/{system}.run", "regenerate": "clir-eval regressions study --record",
        "metrics": ["mrr"], "languages": ["sw", "ha", "yo"],
        "tolerances": {"t": {"value": 0.0, "why": "test"}},
        "systems": {"teacher": {"tolerance": "t"}, "sw-kd": {"tolerance": "t", "languages": ["sw", "yo"]},
                    "ha-kd": {"tolerance": "t", "languages": ["ha"]}},
        "expected": {"sw": {"teacher": entry(0.5), "sw-kd": entry(0.61)},
                     "ha": {"teacher": entry(0.2), "ha-kd": entry(0.33)},
                     "yo": {"teacher": entry(0.1), "sw-kd": entry(0.17)}},
    }), encoding="utf-8")
    monkeypatch.setattr(regressions, "spec_dir", lambda: tmp_path)
    page = render_page("<!-- BEGIN GENERATED: study:teacher,{lang}-kd via=yo:sw -->\n<!-- END GENERATED -->\n")
    assert "| teacher | 0.5000 | 0.2000 | 0.1000 |" in page
    assert "| {lang}-kd | 0.6100 | 0.3300 | 0.1700 |" in page
    without_via = render_page("<!-- BEGIN GENERATED: study:{lang}-kd -->\n<!-- END GENERATED -->\n")
    assert "| {lang}-kd | 0.6100 | 0.3300 | — |" in without_via  # no yo-kd, and nothing read through sw
    with pytest.raises(SpecError, match="not in systems"):
        render_page("<!-- BEGIN GENERATED: study:{lang}-ot -->\n<!-- END GENERATED -->\n")
    with pytest.raises(SpecError, match="via="):
        render_page("<!-- BEGIN GENERATED: study:{lang}-kd via=yo -->\n<!-- END GENERATED -->\n")


def test_cli_rewrites_the_tables_of_a_page(tmp_path):
    from typer.testing import CliRunner

    from clir_eval.cli import app

    page = tmp_path / "page.md"
    page.write_text("# x\n\n<!-- BEGIN GENERATED: regressions/xquad-r.yaml:me5-small -->\nstale\n"
                    "<!-- END GENERATED -->\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["regressions", "--doc", str(page)])
    assert result.exit_code == 0, result.output
    assert "| me5-small | 0.7643 |" in page.read_text(encoding="utf-8")
    empty = tmp_path / "empty.md"
    empty.write_text("# nothing generated\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["regressions", "--doc", str(empty)])
    assert result.exit_code == 2 and "error:" in result.output and "no <!-- BEGIN GENERATED" in result.output


def test_reference_pages_name_no_session_or_commit():
    found = []
    for path in REFERENCE:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            hits = SESSION.findall(line) + commit_like(line)
            if hits:
                found.append(f"{path.relative_to(ROOT)}:{number}: {', '.join(hits)}")
    assert not found, "history belongs in docs/journal/:\n" + "\n".join(found)


def test_the_scan_sees_sessions_and_hashes():
    assert SESSION.findall("measured in session 19") and commit_like("a fresh clone of `37bf3eb`")
    assert commit_like("1,327 queries on 2026-12-02, a decade") == []
    assert commit_like("0.9001 and 1234567") == []  # digits only: a number, not a hash


def test_every_relative_link_resolves():
    broken = []
    for path in [*REFERENCE, *sorted((DOCS / "journal").glob("*.md"))]:
        for target in LINK.findall(path.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue  # a URL or an anchor in the same page
            file = target.split("#", 1)[0]
            if not (path.parent / file).exists():
                broken.append(f"{path.relative_to(ROOT)}: {target}")
    assert not broken, "\n".join(broken)
