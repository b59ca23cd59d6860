"""``clir-eval distill --max-pairs N --seed S`` picks the pairs a study's ``max_pairs: N`` with ``seed: S`` picks."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner


class Picked(Exception):
    """Raised by the stand-in trainer, carrying the training pairs it was given."""

    def __init__(self, pairs: list) -> None:
        super().__init__("picked")
        self.pairs = pairs


def test_cli_max_pairs_is_the_studys_seeded_sample(tmp_path, monkeypatch):
    from clir_eval import cli
    from clir_eval.collections.bitext import load_bitext
    from clir_eval.distill import trainer
    from clir_eval.experiment.config import load_config
    from clir_eval.experiment.runner import StudyRunner

    def capture(config, train, dev, out, **kwargs):
        raise Picked(list(train))

    monkeypatch.setattr(trainer, "distill", capture)
    monkeypatch.setattr(cli, "_english_for_start", lambda *args: [])
    result = CliRunner().invoke(cli.app, ["distill", "--method", "kd", "--student", "me5-small", "--lang", "sw",
                                          "--max-pairs", "64", "--seed", "7", "--out", str(tmp_path / "s")])
    assert isinstance(result.exception, Picked), result.output
    from_cli = [pair.pair_id for pair in result.exception.pairs]

    path = tmp_path / "study.yaml"
    path.write_text("""
name: pairs
seed: 7
collections: [{name: ntrex, split: test, languages: [sw]}]
systems: [teacher]
students: [{name: kd, method: kd, languages: [sw], max_pairs: 64}]
""", encoding="utf-8")
    runner = StudyRunner(load_config(path), cache_root=tmp_path / "cache")
    runner.load_collections()
    from_study = [pair.pair_id for pair in runner.spec_bitext(runner.config.students[0])]

    assert len(from_cli) == 64 and from_cli == from_study
    first = [pair.pair_id for pair in load_bitext("lafand", "sw", "train")[:64]]
    assert from_cli != first  # a sample, not the first lines of the file
