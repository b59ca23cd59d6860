"""Distillation trainer on tiny BERTs: determinism, resume equality, reloadable student, 2-process DDP."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from clir_eval.collections.records import BitextPair
from clir_eval.distill.trainer import DistillConfig, bitext_sha256, distill, epoch_batches
from clir_eval.models.sentence import SentenceEncoder

sys.path.insert(0, str(Path(__file__).parent))
from tiny_models import word_pairs as _pairs  # noqa: E402


TRAIN, DEV = _pairs(48), _pairs(12, seed=1)


def _config(student, teacher, **overrides) -> DistillConfig:
    base = dict(method="kd+ot", student=str(student), teacher=str(teacher), max_steps=6, batch_size=8, lr=1e-3,
                checkpoint_every=2, eval_every=3, loss={"ot_epsilon": 0.1})
    base.update(overrides)
    return DistillConfig(**base)


def _weights(path) -> dict[str, torch.Tensor]:
    model = SentenceEncoder.from_pretrained(str(path))
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_deterministic_reloadable_and_frozen_embeddings(tiny_bert_dir, tiny_bert_dir_48, tmp_path):
    config = _config(tiny_bert_dir_48, tiny_bert_dir)  # student 48 -> teacher 32: projection
    first = distill(config, TRAIN, DEV, tmp_path / "a", show_progress=False)
    second = distill(config, TRAIN, DEV, tmp_path / "b", show_progress=False)
    a, b = _weights(first.student_dir), _weights(second.student_dir)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert first.steps == 6 and first.pairs_seen == 48 and first.pairs_per_second > 0
    assert set(first.dev_metrics) == {"dev_accuracy", "dev_loss"} and [h["step"] for h in first.history] == [3, 6]

    initial = _weights(tiny_bert_dir_48)
    changed = [k for k in initial if not torch.equal(initial[k], a[k])]
    assert changed and not any("embeddings" in k for k in changed)  # trained, embeddings frozen
    assert "projection.weight" in a

    student = SentenceEncoder.from_pretrained(str(first.student_dir))
    assert student.dim == 32 and student.encode(["habari za leo"]).shape == (1, 32)
    args = json.loads(first.training_args.read_text())
    assert args["config"] == config.to_dict() and args["data"]["train_sha256"] == bitext_sha256(TRAIN)
    assert args["data"]["dev_sha256"] == bitext_sha256(DEV) and "torch" in args["versions"]
    assert args["dev_metrics"] == first.dev_metrics


@pytest.mark.parametrize(("method", "loss"), [("ot", {"ot_epsilon": 0.1}),
                                             ("kd+contrastive", {"contrastive_negatives": 20})])
def test_resume_after_interruption_gives_identical_weights(tiny_bert_dir, tmp_path, method, loss):
    # With drawn negatives, the resumed steps must draw what the uninterrupted run drew.
    config = _config(tiny_bert_dir, tiny_bert_dir, method=method, max_steps=7, epochs=1, batch_size=16, loss=loss)
    full = distill(config, TRAIN, DEV, tmp_path / "full", show_progress=False)  # 7 steps over 3 batches/epoch

    def crash(step: int) -> None:
        if step == 5:
            raise KeyboardInterrupt  # killed between the checkpoints of steps 4 and 6

    with pytest.raises(KeyboardInterrupt):
        distill(config, TRAIN, DEV, tmp_path / "cut", show_progress=False, on_step=crash)
    assert not (tmp_path / "cut").exists()
    resumed = distill(config, TRAIN, DEV, tmp_path / "cut", resume=True, show_progress=False)
    assert resumed.resumed_from == 4 and resumed.steps == 7
    a, b = _weights(full.student_dir), _weights(resumed.student_dir)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.history == full.history
    with pytest.raises(ValueError, match="different configuration"):
        distill(_config(tiny_bert_dir, tiny_bert_dir, method=method, max_steps=7, batch_size=16, lr=1e-4, loss=loss),
                TRAIN, DEV, tmp_path / "cut", resume=True, show_progress=False)


def test_epoch_batches_are_full_bucketed_and_seeded():
    lengths = np.random.default_rng(0).integers(2, 60, size=203)
    batches = epoch_batches(lengths, 16, seed=3, epoch=0, window=4)
    flat = np.concatenate(batches)
    assert all(len(b) == 16 for b in batches) and len(flat) == 192 and len(set(flat.tolist())) == 192
    assert all(np.array_equal(x, y) for x, y in zip(batches, epoch_batches(lengths, 16, seed=3, epoch=0, window=4)))
    assert not np.array_equal(flat, np.concatenate(epoch_batches(lengths, 16, seed=3, epoch=1, window=4)))
    padding = sum(int(lengths[b].max() * len(b) - lengths[b].sum()) for b in batches)
    shuffled = np.random.default_rng(1).permutation(203)[:192].reshape(12, 16)
    assert padding < 0.5 * sum(int(lengths[b].max() * 16 - lengths[b].sum()) for b in shuffled)


def test_config_is_validated():
    with pytest.raises(ValueError, match="valid methods"):
        DistillConfig(method="optical", student="x")
    with pytest.raises(ValueError, match="valid options"):
        DistillConfig.from_dict({"method": "kd", "student": "x", "learning_rate": 1})
    with pytest.raises(ValueError, match="valid options"):
        DistillConfig(method="kd", student="x", loss={"epsilon": 0.1})
    with pytest.raises(ValueError, match="batch_size"):
        DistillConfig(method="kd", student="x", batch_size=0)
    assert DistillConfig(method="kd", student="x").max_length == 64


_DDP_SCRIPT = """
import sys, torch
torch.set_num_threads(1)
from clir_eval.collections.records import BitextPair
from clir_eval.distill.trainer import DistillConfig, distill
sys.path.insert(0, {tests!r})
from test_distill_trainer import TRAIN, DEV
config = DistillConfig.from_dict({config!r})
distill(config, TRAIN, DEV, {out!r}, show_progress=False)
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize(("method", "negatives"), [("kd+ot", 0), ("contrastive", 0), ("contrastive", 16)])
def test_two_process_ddp_matches_one_process(tiny_bert_dir, tmp_path, method, negatives):
    # Sinkhorn stops when the worst pair of a (local) batch converges: a tight tolerance makes the
    # 4-pair shards and the 8-pair batch meet the same plans. Contrastive matches only if each process
    # scores its 4 pairs against the negatives of the whole 8-pair batch (and, with extra negatives, if both draw
    # the same ones). Plain SGD without clipping: its step is proportional to the gradient, so gradients summed
    # over the processes instead of averaged would double every step (Adam and clipping would hide that).
    config = _config(tiny_bert_dir, tiny_bert_dir, method=method, max_steps=4, dropout=False, checkpoint_every=0,
                     eval_every=0, optimizer="sgd", lr=0.5, max_grad_norm=0.0,
                     loss={"ot_epsilon": 0.1, "ot_tol": 1e-7, "ot_max_iter": 2000,
                           "contrastive_negatives": negatives})
    single = distill(config, TRAIN, DEV, tmp_path / "one", show_progress=False)
    data = config.to_dict()
    script = tmp_path / "ddp.py"
    script.write_text(_DDP_SCRIPT.format(tests=str(Path(__file__).parent), config=data, out=str(tmp_path / "two")))
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                             "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
         "--master_port", str(_free_port()), str(script)],
        env=env, capture_output=True, text=True, timeout=240, cwd=str(Path(__file__).parent.parent),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    args = json.loads((tmp_path / "two" / "training_args.json").read_text())
    assert args["processes"] == 2 and args["steps"] == 4
    a, b = _weights(single.student_dir), _weights(tmp_path / "two")
    initial = _weights(tiny_bert_dir)
    moved = max(float((a[k] - initial[k]).abs().max()) for k in a)
    assert moved > 1e-3  # the comparison is meaningful: training moved the weights
    for k in a:  # float rounding only: atol << moved, and << the doubled steps of summed gradients
        torch.testing.assert_close(b[k], a[k], atol=moved * 1e-3, rtol=1e-4)
    assert abs(args["dev_metrics"]["dev_loss"] - single.dev_metrics["dev_loss"]) < 1e-4
    if negatives:  # the drawn negatives took part: without them the same run ends elsewhere
        plain = DistillConfig(**{**data, "loss": {**data["loss"], "contrastive_negatives": 0}})
        c = _weights(distill(plain, TRAIN, DEV, tmp_path / "plain", show_progress=False).student_dir)
        assert max(float((c[k] - a[k]).abs().max()) for k in a) > moved * 1e-2


def test_cli_distill_on_lafand(tiny_bert_dir, tmp_path):
    from typer.testing import CliRunner

    from clir_eval.cli import app

    out = tmp_path / "students" / "tiny-kd-sw"
    args = ["distill", "--method", "kd", "--student", str(tiny_bert_dir), "--teacher", str(tiny_bert_dir),
            "--lang", "sw", "--max-pairs", "16", "--max-dev-pairs", "8", "--steps", "2", "--batch-size", "8",
            "--out", str(out), "--option", "loss.kd_english_through_student=true", "--option", "freeze_layers=1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "training_args.json").read_text())
    assert saved["config"]["freeze_layers"] == 1 and saved["config"]["loss"]["kd_english_through_student"]
    assert saved["data"]["train_pairs"] == 16 and saved["data"]["languages"] == ["sw-en"]
    bad = CliRunner().invoke(app, ["distill", "--method", "optical", "--student", "x", "--lang", "sw", "--out",
                                   str(tmp_path / "x")])
    assert bad.exit_code == 2 and "valid methods" in bad.output
    # No pair is 1.9 times closer than its neighbours: the filter drops them all, and says so before training.
    strict = CliRunner().invoke(app, args[:-6] + ["--min-margin", "1.9", "--out", str(tmp_path / "strict")])
    assert strict.exit_code == 2 and "--min-margin 1.9 kept 0 of 16 training pairs" in strict.output
    assert not (tmp_path / "strict").exists()


def test_projection_starts_from_the_least_squares_map(tiny_bert_dir, tiny_bert_dir_48, tmp_path):
    from clir_eval.distill.start import fit_projection

    teacher = SentenceEncoder.from_pretrained(str(tiny_bert_dir))
    target = torch.from_numpy(teacher.encode([p.target for p in TRAIN]))

    def kd_error(student):
        with torch.inference_mode():
            emb = student.encode([p.source for p in TRAIN])
        return float(((torch.from_numpy(emb) - target) ** 2).sum(dim=1).mean())

    student = SentenceEncoder.from_pretrained(str(tiny_bert_dir_48))
    student.add_projection(teacher.dim, seed=0)
    random_error = kd_error(student)
    fit_projection(student, teacher, TRAIN, max_length=64)
    assert kd_error(student) < 0.5 * random_error

    # A second student from the same backbone on the same pairs reuses the fit without running either model;
    # other pairs are fitted afresh.
    again = SentenceEncoder.from_pretrained(str(tiny_bert_dir_48))
    again.add_projection(teacher.dim, seed=1)
    calls = []
    hook = again.backbone.register_forward_hook(lambda *args: calls.append(1))
    fit_projection(again, teacher, TRAIN, max_length=64)
    assert not calls and torch.equal(again.projection.weight, student.projection.weight)
    fit_projection(again, teacher, TRAIN[:40], max_length=64)
    hook.remove()
    assert calls and not torch.equal(again.projection.weight, student.projection.weight)

    # "auto" gives a same-size student from another model a projection; a teacher copy gets none.
    from tiny_models import make_tiny_bert

    same_size = make_tiny_bert(tmp_path / "same-size", hidden_size=32, seed=7)
    other = distill(_config(same_size, tiny_bert_dir, max_steps=1, checkpoint_every=0, eval_every=0,
                            method="kd"), TRAIN, [], tmp_path / "other")
    assert SentenceEncoder.from_pretrained(str(other.student_dir)).projection is not None
    copy = distill(_config(tiny_bert_dir, tiny_bert_dir, max_steps=1, checkpoint_every=0, eval_every=0, method="kd"),
                   TRAIN, [], tmp_path / "copy")
    assert SentenceEncoder.from_pretrained(str(copy.student_dir)).projection is None
    with pytest.raises(ValueError, match="projection must be one of"):
        _config(tiny_bert_dir, tiny_bert_dir, projection="sometimes")


@pytest.fixture()
def teacher_calls(monkeypatch) -> list[int]:
    """The batch size of every frozen-teacher pass the trainer makes (``losses.base.teacher_outputs``), in order."""
    from clir_eval.distill.losses import base

    calls: list[int] = []
    original = base.teacher_outputs

    def counting(teacher, features, layer=None):
        calls.append(len(features["input_ids"]))
        return original(teacher, features, layer)

    monkeypatch.setattr(base, "teacher_outputs", counting)
    return calls


@pytest.mark.parametrize("method", ["ot", "kd"])
def test_teacher_runs_once_per_pair_over_several_epochs(tiny_bert_dir, tmp_path, teacher_calls, method):
    calls = teacher_calls
    config = _config(tiny_bert_dir, tiny_bert_dir, method=method, max_steps=0, epochs=3, checkpoint_every=0,
                     eval_every=0, dropout=False)
    cached = distill(config, TRAIN, [], tmp_path / "cached", show_progress=False)
    assert sum(calls) == len(TRAIN)  # every English side once, before training
    calls.clear()
    plain = distill(DistillConfig(**{**config.to_dict(), "cache_teacher": False}), TRAIN, [], tmp_path / "plain",
                    show_progress=False)
    assert sum(calls) == 3 * len(TRAIN) and plain.steps == cached.steps == 18
    a, b, initial = _weights(cached.student_dir), _weights(plain.student_dir), _weights(tiny_bert_dir)
    assert max(float((a[k] - initial[k]).abs().max()) for k in a) > 1e-3
    for k in a:  # the same outputs, up to float rounding from other batch paddings
        torch.testing.assert_close(a[k], b[k], atol=1e-4, rtol=1e-3)


def test_drawn_negatives_and_the_loss_share_one_teacher_pass(tiny_bert_dir, tmp_path, teacher_calls):
    config = _config(tiny_bert_dir, tiny_bert_dir, method="kd+contrastive", max_steps=0, epochs=1, batch_size=8,
                     checkpoint_every=0, eval_every=0, loss={"contrastive_negatives": 16})
    result = distill(config, TRAIN, [], tmp_path / "bank", show_progress=False)
    assert result.steps == 6 and sum(teacher_calls) == len(TRAIN)  # one epoch: each English side once, bank and loss


def test_frozen_layers_stay_bit_identical(tiny_bert_dir, tmp_path):
    """``freeze_layers=1`` with frozen embeddings: after training, the embeddings and the lowest layer are the
    start's bytes; the layer above moved."""
    config = _config(tiny_bert_dir, tiny_bert_dir, method="kd", freeze_layers=1, checkpoint_every=0, eval_every=0)
    result = distill(config, TRAIN, DEV, tmp_path / "frozen", show_progress=False)
    before, after = _weights(tiny_bert_dir), _weights(result.student_dir)
    frozen = [k for k in before if k.startswith(("backbone.embeddings.", "backbone.encoder.layer.0."))]
    trained = [k for k in before if k.startswith("backbone.encoder.layer.1.")]
    assert frozen and trained
    assert all(torch.equal(before[k], after[k]) for k in frozen)
    assert any(not torch.equal(before[k], after[k]) for k in trained)


def test_a_frozen_projection_keeps_the_fitted_map(tiny_bert_dir, tiny_bert_dir_48, tmp_path):
    """``freeze_projection``: the least-squares map leaves training byte for byte, the layers under it move;
    without it the same run changes the map."""
    def trained(name: str, freeze_projection: bool) -> dict[str, torch.Tensor]:
        config = _config(tiny_bert_dir_48, tiny_bert_dir, method="kd", projection="always", projection_fit_pairs=20,
                         freeze_projection=freeze_projection, checkpoint_every=0, eval_every=0)
        return _weights(distill(config, TRAIN, DEV, tmp_path / name, show_progress=False).student_dir)

    frozen, free = trained("frozen", True), trained("free", False)
    start = _weights(tiny_bert_dir_48)
    layers = [k for k in start if k.startswith("backbone.encoder.layer.")]
    assert any(not torch.equal(start[k], frozen[k]) for k in layers)
    # Both runs fit the same map before the first step; only the free one moves it.
    from clir_eval.distill.trainer import prepare_student

    fitted, _ = prepare_student(_config(tiny_bert_dir_48, tiny_bert_dir, method="kd", projection="always",
                                        projection_fit_pairs=20), SentenceEncoder.from_pretrained(str(tiny_bert_dir)),
                                TRAIN)
    assert torch.equal(frozen["projection.weight"], fitted.projection.weight.detach())
    assert not torch.equal(free["projection.weight"], fitted.projection.weight.detach())

def test_a_map_fitted_on_english_alone_carries_the_foreign_side(tiny_bert_dir, tiny_bert_dir_48):
    """The start needs no bitext: a map fitted on English sentences through both models also brings the foreign
    sentences near the teacher's embeddings of their translations (here: the same words in another order)."""
    from clir_eval.distill.start import fit_projection

    teacher = SentenceEncoder.from_pretrained(str(tiny_bert_dir))
    english = [p.target for p in _pairs(200, seed=7)]
    target = torch.from_numpy(teacher.encode([p.target for p in TRAIN]))

    def foreign_error(student) -> float:
        with torch.inference_mode():
            return float(((torch.from_numpy(student.encode([p.source for p in TRAIN])) - target) ** 2).sum(1).mean())

    student = SentenceEncoder.from_pretrained(str(tiny_bert_dir_48))
    student.add_projection(teacher.dim, seed=0)
    random_error = foreign_error(student)
    info = fit_projection(student, teacher, [], max_length=64, english=english)
    assert info["fit_pairs"] == 0 and info["fit_english"] == 200
    assert foreign_error(student) < 0.5 * random_error
    with pytest.raises(ValueError, match="needs bitext pairs or English"):
        fit_projection(student, teacher, [], max_length=64)


def test_the_query_prefix_counts_as_special_tokens_for_alignment(tiny_bert_dir):
    """E5's ``query: `` has no English counterpart: OT leaves its tokens out like [CLS]/[SEP]."""
    from dataclasses import replace

    from clir_eval.distill.data import TokenizedBitext

    teacher = SentenceEncoder.from_pretrained(str(tiny_bert_dir))
    student = SentenceEncoder.from_pretrained(str(tiny_bert_dir))
    student.config = replace(student.config, query_prefix="the cat ")
    data = TokenizedBitext([BitextPair("paka leo", "cat today", "sw", "en")], student, teacher, 64, False)
    tokens = student.tokenizer.convert_ids_to_tokens(data.source["input_ids"][0])
    assert tokens == ["[CLS]", "the", "cat", "paka", "leo", "[SEP]"]
    assert data.source["special_tokens_mask"][0] == [1, 1, 1, 0, 0, 1]
    assert data.target["special_tokens_mask"][0] == [1, 0, 0, 1]


def test_frozen_layers_compute_the_same_states_at_every_step(tiny_bert_dir):
    """Frozen modules run without dropout in training mode (their output can be computed once); the trained layer
    above keeps its dropout."""
    from clir_eval.distill.start import freeze

    student = SentenceEncoder.from_pretrained(str(tiny_bert_dir))
    freeze(student, embeddings=True, layers=1, dropout=True)
    student.train()
    features = student.tokenize(["paka leo na mbwa", "pesa benki"])
    first, second = (student.backbone(**{k: features[k] for k in ("input_ids", "attention_mask")},
                                      output_hidden_states=True).hidden_states for _ in range(2))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert not torch.equal(first[2], second[2])


def _teacher_layer_calls(hidden_size: int) -> tuple[list[int], object]:
    """Count forwards of transformer layers of width ``hidden_size`` (the teacher's; the student is wider)."""
    calls: list[int] = []

    def hook(module, args, output):
        if type(module).__name__.endswith("Layer") and args and args[0].shape[-1] == hidden_size:
            calls.append(1)

    return calls, torch.nn.modules.module.register_module_forward_hook(hook)


def test_the_next_student_reuses_the_teachers_states_and_trains_the_same_weights(tiny_bert_dir, tiny_bert_dir_48,
                                                                                 tmp_path):
    """A study trains its students one after another on the same batches: the second runs none of the teacher's
    layers (its states come from the first), and its weights are those of a run that computes them afresh."""
    from clir_eval.models import trunk

    def run(name: str, method: str) -> dict[str, torch.Tensor]:
        config = _config(tiny_bert_dir_48, tiny_bert_dir, method=method, checkpoint_every=0, epochs=1, max_steps=0)
        return _weights(distill(config, TRAIN, DEV, tmp_path / name, show_progress=False).student_dir)

    cache = trunk.trunk_cache()
    limit = cache.max_bytes
    try:
        cache.resize(0)  # the teacher runs at every step
        fresh = run("fresh", "kd+ot")
        cache.resize(limit)
        cache.clear()
        calls, handle = _teacher_layer_calls(hidden_size=32)
        try:
            run("first", "kd")
            first_calls = len(calls)
            shared = run("second", "kd+ot")
            second_calls = len(calls) - first_calls
        finally:
            handle.remove()
    finally:
        cache.resize(limit)
    assert first_calls > 0 and second_calls == 0
    assert fresh.keys() == shared.keys() and all(torch.equal(fresh[k], shared[k]) for k in fresh)


@pytest.mark.parametrize("method, english", [("kd", True), ("kd+ot", False)])
def test_a_shared_trunk_trains_the_same_weights(tiny_bert_dir, tiny_bert_dir_48, tmp_path, method, english):
    """Frozen lower layers run once (``share_trunk``): the weights equal a run that recomputes them at every step,
    to float rounding (the trunk's states are padded to other lengths); a second student on the same pairs
    reuses the states without running the trunk."""
    import clir_eval.distill.data as data

    def run(name: str, share: bool) -> dict[str, torch.Tensor]:
        config = _config(tiny_bert_dir_48, tiny_bert_dir, method=method, freeze_layers=1, share_trunk=share,
                         checkpoint_every=0, eval_every=0, loss={"ot_epsilon": 0.1,
                                                                 "kd_english_through_student": english})
        return _weights(distill(config, TRAIN, DEV, tmp_path / name, show_progress=False).student_dir)

    data._SHARED.clear()
    computed = []
    original = data.TrunkStates.__init__
    data.TrunkStates.__init__ = lambda self, *a, **kw: (computed.append(1), original(self, *a, **kw))[1]
    try:
        plain, shared = run("plain", False), run("shared", True)
        assert len(computed) == 1  # the shared run computed the trunk's states once
        again = run("again", True)
        assert len(computed) == 1  # ... and the next student reused them
    finally:
        data.TrunkStates.__init__ = original
    start = _weights(tiny_bert_dir_48)
    moved = max(float((plain[k] - start[k]).abs().max()) for k in plain if k in start)
    assert moved > 1e-3
    for k in plain:
        torch.testing.assert_close(shared[k], plain[k], atol=moved * 1e-3, rtol=1e-4)
    assert all(torch.equal(again[k], shared[k]) for k in shared)


def test_the_trainer_logs_the_loss_parts_and_counts_unconverged_sinkhorn(tiny_bert_dir, tmp_path, caplog):
    """The trainer sums the parts the loss returns and logs each one's mean beside the train loss; Sinkhorn runs
    that stopped at ot_max_iter are counted over training and dev batches (6 steps + 2 evaluations x 2 dev
    batches)."""
    import logging
    import re

    config = _config(tiny_bert_dir, tiny_bert_dir, method="kd+ot", checkpoint_every=0,
                     loss={"ot_epsilon": 0.1, "ot_max_iter": 2, "ot_weight": 0.5})
    with caplog.at_level(logging.INFO, logger="clir_eval.distill.trainer"):
        result = distill(config, TRAIN, DEV, tmp_path / "s", show_progress=False)
    lines = [re.search(r"step (\d+): train loss ([\d.]+) \(kd ([\d.]+), ot ([\d.]+)\)", r.getMessage())
             for r in caplog.records]
    lines = [m for m in lines if m]
    assert [int(m[1]) for m in lines] == [3, 6]
    for m, history in zip(lines, result.history):
        assert abs(float(m[2]) - history["train_loss"]) < 1e-4 and float(m[4]) > 0
        assert abs(float(m[3]) + float(m[4]) - float(m[2])) <= 2e-4  # the parts add up to the loss (4 decimals)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "Sinkhorn" in r.getMessage()]
    assert warnings == ["Sinkhorn hit ot_max_iter=2 before ot_tol in 10 batches; the plans were used as they were"]
    assert set(result.history[0]) == {"step", "train_loss", "dev_accuracy", "dev_loss"}  # training_args unchanged


def test_the_trainer_records_how_sharp_the_ot_plans_are(tiny_bert_dir, tmp_path, caplog):
    """Each evaluation point logs and records the mean normalised entropy and row maximum of the OT plans over
    the training batches since the previous one (also without dev pairs); the exact solver trains as well, and
    a loss without stats leaves training_args.json as it was."""
    import logging

    fields = {"step", "ot_plan_entropy", "ot_plan_row_max"}
    config = _config(tiny_bert_dir, tiny_bert_dir, method="kd+ot", max_steps=2, eval_every=1, checkpoint_every=0)
    with caplog.at_level(logging.INFO, logger="clir_eval.distill.trainer"):
        result = distill(config, TRAIN, DEV, tmp_path / "s", show_progress=False)
    assert [set(r) for r in result.loss_stats] == [fields, fields] and [r["step"] for r in result.loss_stats] == [1, 2]
    assert all(0.0 <= r["ot_plan_entropy"] <= 1.0 and 0.0 < r["ot_plan_row_max"] <= 1.0 for r in result.loss_stats)
    assert json.loads(result.training_args.read_text())["loss_stats"] == list(result.loss_stats)
    assert any(r.getMessage().startswith("step 2: ot_plan_entropy ") for r in caplog.records)
    assert set(result.history[0]) == {"step", "train_loss", "dev_accuracy", "dev_loss"}  # the history as it was
    exact = distill(dataclasses.replace(config, loss=dataclasses.replace(config.loss, ot_solver="emd")), TRAIN, [],
                    tmp_path / "emd", show_progress=False)
    assert [set(r) for r in exact.loss_stats] == [fields, fields] and exact.history == ()
    assert exact.loss_stats[-1]["ot_plan_row_max"] > result.loss_stats[-1]["ot_plan_row_max"]  # exact: sharper
    a, b = _weights(result.student_dir), _weights(exact.student_dir)
    assert any(not torch.equal(a[k], b[k]) for k in a)  # another plan, another gradient
    kd = distill(dataclasses.replace(config, method="kd"), TRAIN, DEV, tmp_path / "kd", show_progress=False)
    assert kd.loss_stats == () and "loss_stats" not in json.loads(kd.training_args.read_text())


def test_train_state_keeps_the_running_parts_across_a_resume():
    from clir_eval.distill.checkpoints import TrainState

    state = TrainState()
    state.add_loss(3.0, {"kd": 1.0, "ot": 2.0})
    state.add_loss(5.0, {"kd": 2.0, "ot": 3.0})
    resumed = TrainState()
    resumed.load_state_dict(state.state_dict())
    assert resumed.take_loss() == state.take_loss() == (4.0, {"kd": 1.5, "ot": 2.5})
    assert state.take_loss() == (0.0, {})
    old = {k: v for k, v in TrainState(running=2.0, running_n=1).state_dict().items()
           if k not in ("running_parts", "running_stats", "stats_history")}
    resumed.load_state_dict(old)  # a checkpoint written before the parts (and the stats) were kept
    assert resumed.take_loss() == (2.0, {}) and resumed.take_stats() == {} and resumed.stats_history == []


def test_train_state_keeps_the_running_stats_and_their_record_across_a_resume():
    from clir_eval.distill.checkpoints import TrainState

    state = TrainState(stats_history=[{"step": 1, "ot_plan_entropy": 0.5}])
    state.add_stats({"ot_plan_entropy": 0.2, "ot_plan_row_max": 0.8})
    state.add_stats({"ot_plan_entropy": 0.4, "ot_plan_row_max": 0.6})
    resumed = TrainState()
    resumed.load_state_dict(state.state_dict())
    assert resumed.stats_history == state.stats_history
    taken = resumed.take_stats()
    assert taken.keys() == {"ot_plan_entropy", "ot_plan_row_max"} and math.isclose(taken["ot_plan_entropy"], 0.3)
    assert math.isclose(taken["ot_plan_row_max"], 0.7) and resumed.take_stats() == {}


def test_negative_bank_draws_outside_the_batch_alike_on_every_process_and_masks_repeats():
    from clir_eval.distill.data import NegativeBank

    english = ["a", "b", "c", "a", "d", "e", "f", "g", "h", "a"]
    bank = NegativeBank([torch.full((3,), float(i)) for i in range(10)], english, size=5)
    batch, local = np.array([0, 1, 2, 3]), np.array([0, 1])
    negatives, mask = bank.draw(batch, local, seed=7, micro=3)
    drawn = negatives[:, 0].long().tolist()
    assert len(drawn) == 5 and not set(drawn) & set(batch.tolist())
    # Row 0's English "a" is also pair 9's: where pair 9 was drawn, it is masked for row 0 only.
    assert mask.tolist() == [[i == 9 for i in drawn], [False] * 5]
    again, _ = bank.draw(batch, np.array([2, 3]), seed=7, micro=3)  # the other process's rows
    assert torch.equal(again, negatives)
    other, _ = bank.draw(batch, local, seed=7, micro=4)
    assert not torch.equal(other, negatives)  # each micro-batch draws afresh
    everything, _ = NegativeBank(list(negatives.new_zeros(10, 3)), english, size=50).draw(batch, local, 7, 0)
    assert len(everything) == 6  # capped at the pairs outside the batch


@pytest.mark.parametrize("precision, native, warned", [("bf16", False, True), ("bf16", True, False),
                                                       ("no", False, False)])
def test_bf16_without_native_support_is_warned_before_training(tiny_bert_dir, tmp_path, caplog, monkeypatch,
                                                                 precision, native, warned):
    """bf16 autocast on a CPU that emulates it runs many times slower than float32; the trainer keeps the asked
    precision (the cache key names it) and says so once, before the first step."""
    import logging

    import clir_eval.distill.trainer as trainer

    monkeypatch.setattr(trainer, "slow_bf16", lambda device_type: not native)
    config = _config(tiny_bert_dir, tiny_bert_dir, method="kd", max_steps=2, checkpoint_every=0, eval_every=0,
                     mixed_precision=precision)
    with caplog.at_level(logging.INFO, logger="clir_eval.distill.trainer"):
        distill(config, TRAIN, DEV, tmp_path / "s", show_progress=False)
    messages = [r.getMessage() for r in caplog.records]
    slow = [i for i, m in enumerate(messages) if "without native bfloat16" in m]
    assert len(slow) == (1 if warned else 0)
    if warned:
        first_step = next(i for i, m in enumerate(messages) if "parameters trainable" in m)
        assert slow[0] < first_step


def test_students_of_different_precisions_train_one_after_another_in_one_process(tiny_bert_dir, tmp_path):
    """A study trains its students in one process: a float32 student after a bf16 one must train (accelerate's
    state once refused a second precision) and in float32 (the same weights as the float32 student before it)."""
    config = _config(tiny_bert_dir, tiny_bert_dir, method="kd", max_steps=2, checkpoint_every=0, eval_every=0)
    distill(config, TRAIN, DEV, tmp_path / "fp32-a", show_progress=False)
    bf16 = dataclasses.replace(config, mixed_precision="bf16")
    distill(bf16, TRAIN, DEV, tmp_path / "bf16", show_progress=False)
    distill(config, TRAIN, DEV, tmp_path / "fp32-b", show_progress=False)
    first, half, again = (_weights(tmp_path / name) for name in ("fp32-a", "bf16", "fp32-b"))
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert any(not torch.equal(first[k], half[k]) for k in first)


def test_the_bf16_probe_agrees_with_the_cpu_flags():
    """On x86 Linux the CPU's own flags say what oneDNN can run: AVX-512 bf16 or AMX is native, AVX2 alone is not."""
    import platform

    from clir_eval.distill.precision import slow_bf16

    cpuinfo = Path("/proc/cpuinfo")
    if platform.machine() != "x86_64" or not cpuinfo.exists():
        pytest.skip("reads x86 Linux CPU flags")
    flags = set(next(line for line in cpuinfo.read_text().splitlines() if line.startswith("flags")).split())
    if flags & {"avx512_bf16", "amx_bf16"}:
        assert slow_bf16("cpu") is False
    elif "avx512f" not in flags:
        assert slow_bf16("cpu") is True
    else:
        pytest.skip("AVX-512 without bf16: oneDNN's own choice")
    assert slow_bf16("mps") is False  # no probe there: no warning rather than a guess


def test_micro_batches_slice_each_global_batch_across_processes_and_epochs(tiny_bert_dir):
    """Micro-batch m of every rank, side by side, is global batch m of ``epoch_batches`` in m's epoch, also across
    an epoch boundary and when counters are asked out of order (as after a resume)."""
    from clir_eval.distill.data import EpochSampler, MicroBatches, TokenizedBitext

    model = SentenceEncoder.from_pretrained(str(tiny_bert_dir))
    data = TokenizedBitext(TRAIN, model, model, 32, False)
    per_epoch = len(TRAIN) // 8
    ranks = [MicroBatches(data, EpochSampler(data.lengths, 8, 5, 2), rank=r, local_size=4) for r in range(2)]
    for micro in [0, per_epoch + 1, 1, 2 * per_epoch - 1, per_epoch]:
        epoch, index = divmod(micro, per_epoch)
        expected = epoch_batches(data.lengths, 8, 5, epoch, 2)[index]
        for r, micro_batches in enumerate(ranks):
            want = data.batch(expected[r * 4 : (r + 1) * 4]).source["input_ids"]
            assert torch.equal(micro_batches(micro).source["input_ids"], want)
    assert epoch_batches(data.lengths, 8, 5, 0, 2)[0].tolist() != epoch_batches(data.lengths, 8, 5, 1, 2)[0].tolist()


def test_training_progress_reaches_a_log_file_with_the_loss(tiny_bert_dir, tmp_path, monkeypatch, caplog):
    """With stderr not a terminal (a study's log file), training logs its count, rate, ETA and running loss, with
    the last dev accuracy once there is one, then a done line (a student of a study trains for minutes)."""
    import logging

    from clir_eval.distill import trainer

    monkeypatch.setattr(trainer, "LOG_INTERVAL", 0.0)  # a line at every step instead of every 10 s
    with caplog.at_level(logging.INFO, logger="clir_eval.progress"):
        distill(_config(tiny_bert_dir, tiny_bert_dir, max_steps=4, eval_every=2), TRAIN, DEV, tmp_path / "s",
                show_progress=False)
    lines = [r.getMessage() for r in caplog.records if r.name == "clir_eval.progress"]
    assert [line.split(" (")[0] for line in lines[:4]] == [f"distill kd+ot: {n}/4 steps" for n in range(1, 5)]
    assert all("steps/s, ETA" in line and "; loss " in line for line in lines[:4])
    assert "dev acc" not in lines[1] and ", dev acc " in lines[2] and "(step 2)" in lines[2]  # evaluated at step 2
    assert lines[-1].startswith("distill kd+ot: done, 4 steps in ")
