"""Issue 31, training side: no code from a checkpoint, non-finite weights are errors, interrupted students resume.

Tiny BERTs only (tests/tiny_models.py); every case here failed before its fix.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from clir_eval.distill import checkpoints as ckpt
from clir_eval.distill.trainer import DistillConfig, distill

sys.path.insert(0, str(Path(__file__).parent))
from tiny_models import word_pairs  # noqa: E402

TRAIN, DEV = word_pairs(48), word_pairs(12, seed=1)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _cli(args: list[str]):
    from typer.testing import CliRunner

    from clir_eval.cli import app

    return CliRunner().invoke(app, args)


def _distill_args(tiny_bert_dir: Path, out: Path, *extra: str) -> list[str]:
    return ["distill", "--method", "kd", "--student", str(tiny_bert_dir), "--teacher", str(tiny_bert_dir),
            "--lang", "sw", "--max-pairs", "16", "--max-dev-pairs", "8", "--steps", "2", "--batch-size", "8",
            "--checkpoint-every", "1", "--out", str(out), *extra]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    from clir_eval.models.sentence import SentenceEncoder

    return {k: v.detach().clone() for k, v in SentenceEncoder.from_pretrained(str(path)).state_dict().items()}


# ---- 1. no code from a checkpoint ---------------------------------------------------------------------------


class _Payload:
    """Unpickled, it creates ``marker``: what a planted checkpoint could run instead."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


@pytest.mark.parametrize("planted", ["step-0000001.pt", "step-0000001.safetensors"])
def test_resume_refuses_a_planted_pickle_and_runs_none_of_it(tiny_bert_dir, tmp_path, planted):
    out, marker = tmp_path / "student", tmp_path / "payload-ran"
    checkpoints = ckpt.checkpoint_dir(out)
    checkpoints.mkdir()
    stem = planted.split(".")[0]
    suffix = planted[len(stem):]
    for name in (planted, f"{stem}.rng0{suffix}"):  # a complete checkpoint by name, pickles inside
        torch.save({"config": _Payload(marker), "state": _Payload(marker)}, checkpoints / name)
    result = _cli(_distill_args(tiny_bert_dir, out, "--resume"))
    assert result.exit_code == 2, result.output
    assert "error:" in result.output and planted in result.output
    assert not marker.exists(), "the checkpoint's pickle ran"
    assert not out.exists()


def test_a_truncated_checkpoint_is_refused_naming_it(tiny_bert_dir, tmp_path):
    config = DistillConfig(method="kd", student=str(tiny_bert_dir), teacher=str(tiny_bert_dir), max_steps=2,
                           batch_size=16, checkpoint_every=1)
    done = distill(config, TRAIN, DEV, tmp_path / "s", show_progress=False)
    latest = ckpt.latest_checkpoint(done.checkpoint_dir, 1)
    latest.write_bytes(latest.read_bytes()[:200])
    with pytest.raises(ckpt.CheckpointError, match=f"{latest.name}: not a readable checkpoint"):
        distill(config, TRAIN, DEV, tmp_path / "s", resume=True, show_progress=False)


def test_checkpoint_files_hold_tensors_and_json_only(tmp_path):
    import random

    import numpy as np
    from safetensors import safe_open

    torch.manual_seed(3), random.seed(3), np.random.seed(3)
    state = ckpt.rng_state()
    path = tmp_path / "rng.safetensors"
    ckpt.save_tree({"rng": state, "optimizer": {"state": {0: {"step": torch.tensor(4.0)}},
                                                "param_groups": [{"betas": (0.9, 0.999), "params": [0]}]}}, path)
    with safe_open(str(path), framework="pt") as handle:  # a plain safetensors file: no pickle anywhere
        assert handle.get_tensor("/rng/torch").dtype == torch.uint8
        assert json.loads(handle.metadata()["tree"])["rng"]["python"][0] == 3
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    loaded = ckpt.load_tree(path)
    assert loaded["optimizer"]["state"][0]["step"].item() == 4.0
    assert loaded["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)
    ckpt.set_rng_state(loaded["rng"])
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected


# ---- 2. non-finite is an error ------------------------------------------------------------------------------


def test_distill_with_an_infinite_lr_stops_naming_the_step(tiny_bert_dir, tmp_path):
    out = tmp_path / "student"
    result = _cli(_distill_args(tiny_bert_dir, out, "--lr", "inf"))
    assert result.exit_code == 2, result.output
    assert "error:" in result.output and "step 1" in result.output and "non-finite" in result.output
    assert not out.exists() and not list(ckpt.checkpoint_dir(out).glob("step-*"))  # nor a checkpoint of them
    assert "Traceback" not in result.output


def _student(tiny_bert_dir: Path, path: Path) -> Path:
    from clir_eval.models.sentence import SentenceEncoder

    encoder = SentenceEncoder.from_pretrained(str(tiny_bert_dir))
    encoder.add_projection(encoder.dim)  # the teacher's size: a search with it is possible
    return encoder.save(path)


def _poison(directory: Path) -> None:
    from safetensors.torch import load_file, save_file

    weights = load_file(str(directory / "model.safetensors"))
    name = sorted(weights)[-1]
    weights[name] = weights[name].clone()
    weights[name].view(-1)[0] = float("nan")
    save_file(weights, str(directory / "model.safetensors"), metadata={"format": "pt"})


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:120])


def _set_model_type(directory: Path) -> None:
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "model_type": "no-such-architecture"}))


BROKEN_STUDENTS = {
    "non-finite weights": (_poison, "not finite"),
    "truncated weights": (lambda d: _truncate(d / "model.safetensors"), "cannot be loaded"),
    "truncated projection": (lambda d: _truncate(d / "projection.safetensors"), "projection.safetensors"),
    "unsupported architecture": (_set_model_type, "cannot be loaded"),
    "corrupt encoder config": (lambda d: (d / "clir_eval_encoder.json").write_text("{\"encoder\": "),
                               "clir_eval_encoder.json:1: not valid JSON"),
    "encoder config not an object": (lambda d: (d / "clir_eval_encoder.json").write_text("[]"),
                                     "clir_eval_encoder.json"),
    "no weights": (lambda d: (d / "model.safetensors").unlink(), "cannot be loaded"),
}


@pytest.mark.parametrize("case", sorted(BROKEN_STUDENTS))
def test_a_broken_student_directory_is_an_error_naming_it(tiny_bert_dir, tmp_path, case):
    from clir_eval.io import InputFileError
    from clir_eval.models.sentence import SentenceEncoder

    mutate, message = BROKEN_STUDENTS[case]
    student = _student(tiny_bert_dir, tmp_path / "student")
    mutate(student)
    with pytest.raises(InputFileError, match=str(student)) as caught:
        SentenceEncoder.from_pretrained(str(student))
    assert message in str(caught.value)


@pytest.mark.parametrize("case", ["non-finite weights", "truncated weights"])
def test_search_with_a_broken_student_is_an_error_and_writes_no_run(tiny_bert_dir, tmp_path, case):
    mutate, message = BROKEN_STUDENTS[case]
    student = _student(tiny_bert_dir, tmp_path / "student")
    mutate(student)
    run = tmp_path / "x.run"
    result = _cli(["search", "--system", f"student:{student}", "--collection", "ntrex", "--lang", "sw",
                   "--teacher", str(tiny_bert_dir), "--index-dir", str(tmp_path / "idx"), "--out", str(run)])
    assert result.exit_code == 2, result.output
    assert "error:" in result.output and str(student) in result.output and message in result.output
    assert "Traceback" not in result.output and not run.exists()


def test_a_search_with_no_hit_for_any_query_fails_and_writes_nothing(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from clir_eval.retrieval import systems

    # What a model embedding every query as NaN made Faiss return: every qid present, none with a hit.
    monkeypatch.setattr(systems, "search_system", lambda *a, **k: {"q1": [], "q2": [], "q3": []})
    run = tmp_path / "x.run"
    with pytest.raises(ValueError, match="no hit for any of the 3 ntrex sw test queries"):
        systems.run_system("teacher", SimpleNamespace(name="ntrex"), "sw", "test", indexes=None, out_path=run)
    assert not run.exists()
    # One query with a hit is a run (the others score 0, as trec_eval counts them).
    monkeypatch.setattr(systems, "search_system", lambda *a, **k: {"q1": [("d1", 1.0)], "q2": []})
    systems.run_system("teacher", SimpleNamespace(name="ntrex"), "sw", "test", indexes=None, out_path=run)
    assert run.read_text().split() == ["q1", "Q0", "d1", "1", "1.0", "teacher"]


# ---- 3. an interrupted study step resumes, and leaves nothing behind --------------------------------------------

_KILLED_STUDY = """
import os, signal, sys
from pathlib import Path

import clir_eval.distill.trainer as trainer
from clir_eval.experiment.config import load_config
from clir_eval.experiment.runner import StudyRunner

distill = trainer.distill


def killed_at_step_3(*args, **kwargs):
    def on_step(step):
        if step == 3:
            os.kill(os.getpid(), signal.SIGKILL)  # kill -9: no cleanup code runs
    return distill(*args, **kwargs, on_step=on_step, show_progress=False)


trainer.distill = killed_at_step_3
runner = StudyRunner(load_config(sys.argv[1]), cache_root=Path(sys.argv[2]))
runner.load_collections()
runner.student(runner.config.students[0])
"""


def test_a_killed_student_step_resumes_from_its_checkpoints_and_leaves_no_temporary_directory(
        tiny_bert_dir, tmp_path, monkeypatch):
    import os
    import subprocess

    import clir_eval.distill.trainer as trainer
    from clir_eval.experiment.config import load_config
    from clir_eval.experiment.runner import StudyRunner

    config = tmp_path / "study.yaml"
    config.write_text(f"""
name: resume
teacher: {tiny_bert_dir}
collections: [{{name: ntrex, split: test, languages: [sw]}}]
systems: [teacher]
students:
  - {{name: kd, method: kd, backbone: {tiny_bert_dir}, languages: [sw], max_pairs: 24,
      options: {{max_steps: 5, batch_size: 8, lr: 0.001, checkpoint_every: 1}}}}
dev_pairs: 8
""", encoding="utf-8")
    script = tmp_path / "killed.py"
    script.write_text(_KILLED_STUDY, encoding="utf-8")
    cache = tmp_path / "cache"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    killed = subprocess.run([sys.executable, str(script), str(config), str(cache)], env=env, capture_output=True,
                            text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr[-3000:]
    students = cache / "students"
    assert [p.name for p in students.iterdir() if p.name.startswith(".kd-")], "the kill left no temporary directory"

    results = []

    def recorded(*args, **kwargs):
        results.append(original(*args, **kwargs))
        return results[-1]

    original = trainer.distill
    monkeypatch.setattr(trainer, "distill", recorded)

    def train(root: Path) -> Path:
        runner = StudyRunner(load_config(config), cache_root=root)
        runner.load_collections()
        return runner.student(runner.config.students[0])

    resumed = train(cache)
    assert results[-1].resumed_from == 3 and results[-1].steps == 5
    assert [p.name for p in students.iterdir()] == [resumed.name]  # the step, and no leftover beside it
    assert not any((cache / ".work" / "students").iterdir())  # its checkpoints served, then went
    fresh = train(tmp_path / "uninterrupted")
    assert results[-1].resumed_from == 0
    a, b = _weights(fresh), _weights(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
