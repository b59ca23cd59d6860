"""Train a student query encoder from bitext against a frozen teacher (KD, OT, contrastive, combined).

``distill(config, train_pairs, dev_pairs, out_dir)`` runs under ``accelerate`` (one CPU/GPU, or
DDP under ``accelerate launch`` / ``torchrun``). Design points:

* every optimizer step sees ``batch_size * grad_accumulation`` pairs however many processes run:
  each process takes a contiguous slice of the global micro-batch (``batch_size`` must divide
  by the number of processes), so a 2-process run follows the 1-process run;
* batches come from :mod:`clir_eval.distill.data` (length-bucketed, a pure function of seed and epoch);
* :func:`distill` sets the run up (accelerator, start, batches, optimizer) and hands it to ``_Training``, whose
  methods are the loop's roles: one optimizer step, dev evaluation with early stopping, checkpoint, resume;
* the student's start (frozen weights, initial map into the teacher's space) is
  :mod:`clir_eval.distill.start`; the teacher runs under ``no_grad``;
* checkpoints (:mod:`clir_eval.distill.checkpoints`: safetensors and JSON, never a pickle) are written
  atomically to ``<out_dir>.checkpoints/``; ``resume=True`` continues from the newest one to the same final
  weights as an uninterrupted run;
* a step that leaves a trainable weight NaN or infinite stops the run (:class:`TrainingDiverged`, naming the
  step) before any checkpoint or student of those weights is written.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import platform
import random
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from clir_eval.collections.records import BitextPair
from clir_eval.distill import checkpoints as ckpt
from clir_eval.distill.data import (
    EpochSampler,
    MicroBatches,
    NegativeBank,
    SharedTeacher,
    TeacherCache,
    TokenizedBitext,
    bitext_sha256,
    epoch_batches,
    shared_trunk,
)
from clir_eval.distill.losses import LOSS_METHODS, SINKHORN_UNCONVERGED, LossOptions, build_loss, encode_batch
from clir_eval.distill.precision import slow_bf16
from clir_eval.distill.start import fit_projection, freeze, wants_projection
from clir_eval.progress import LOG_INTERVAL, progress

logger = logging.getLogger(__name__)

MIXED_PRECISION = ("no", "fp16", "bf16")
PROJECTION_MODES = ("auto", "always", "never")
OPTIMIZERS = ("adamw", "sgd")
TRAINING_ARGS = "training_args.json"

__all__ = ["DistillConfig", "DistillResult", "TrainingDiverged", "bitext_sha256", "distill", "epoch_batches",
           "prepare_student", "save_start"]


@dataclass(frozen=True)
class DistillConfig:
    """How a student is distilled; copied into ``training_args.json`` of the saved student.

    Attributes:
        method: one of ``LOSS_METHODS`` (kd, ot, contrastive, kd+ot, kd+contrastive).
        student: backbone name or path (``me5-small``, ``minilm-l6`` for a teacher copy, any HF id/dir).
        teacher: teacher name or path.
        max_steps: optimizer steps; 0 means ``epochs`` full passes.
        epochs: passes over the bitext when ``max_steps`` is 0.
        batch_size: pairs per micro-batch over all processes; a step is ``grad_accumulation`` micro-batches.
        lr, warmup_ratio, weight_decay, max_grad_norm (0 = no clipping): linear warm-up then decay.
        optimizer: ``adamw`` or ``sgd`` (plain SGD: its step is proportional to the gradient, which the
            multi-process test uses to see that gradients are averaged, not summed).
        seed: data order, projection initialisation, dropout.
        max_length: token cap of both sides during training.
        freeze_embeddings: freeze the student's embedding module (word, position, type, norm).
        freeze_layers: also freeze the lowest N transformer layers.
        freeze_projection: keep the initial map into the teacher's space as fitted: the bitext then moves only the
            transformer layers, towards states the map already sends to the right place. (Trained, the map drifts
            towards a least-squares fit of the few training pairs, which on its own scores far below the
            English-fitted map: docs/distillation.md.)
        dropout: keep the student's dropout in training (False sets every dropout to 0).
        checkpoint_every: write a checkpoint every N steps (0 = only at the end).
        eval_every: dev evaluation every N steps (0 = only at the end).
        patience: stop after N evaluations without a better dev accuracy, keeping the best
            weights (0 = off).
        bucket_window: batches per length-sorting window.
        mixed_precision: ``no``, ``fp16`` or ``bf16`` (passed to ``accelerate``).
        projection: a learned linear map on the student's token states into the teacher's space:
            ``auto`` adds one when the hidden sizes differ or the student is another model than the
            teacher (their spaces are unrelated at start), ``always``, or ``never``. A new projection
            starts from the least-squares map of the student's pooled states of the foreign sentences
            onto the teacher's embeddings of their English sides (``projection_fit_pairs`` training
            pairs, closed form) plus ``projection_fit_english`` English sentences run through both models
            (the ``english`` text given to :func:`distill`): with a few hundred steps of budget, learning the
            rotation between two unrelated spaces by gradient descent alone would use the whole budget, and
            English text keeps the backbone's own cross-lingual alignment (see :mod:`clir_eval.distill.start`).
        projection_fit_pairs, projection_fit_english: how many training pairs and English sentences the fit
            reads (the first ones given); 0 leaves that part out.
        share_trunk: with the embeddings and ``freeze_layers`` > 0 frozen, run those frozen lower layers once
            over the training sentences and feed their states to the layers above at every step (their output
            never changes: frozen modules run without dropout); students of one process trained from the same
            start on the same pairs share them. The weights equal those of a run without it up to float
            rounding (tested).
        cache_teacher: when training sees a pair more than once (several epochs), compute the frozen
            teacher's outputs of every pair once before training and keep them in memory. Token-level
            losses (OT) keep the English token states: about ``4 * dim`` bytes per English token.
        loss: options of the losses (``LossOptions``; a dict is accepted and checked).
    """

    method: str
    student: str
    teacher: str = "minilm-l6"
    max_steps: int = 0
    epochs: int = 1
    batch_size: int = 32
    lr: float = 2e-5
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    grad_accumulation: int = 1
    seed: int = 0
    max_length: int = 64
    freeze_embeddings: bool = True
    freeze_layers: int = 0
    freeze_projection: bool = False
    dropout: bool = True
    checkpoint_every: int = 0
    eval_every: int = 0
    patience: int = 0
    bucket_window: int = 50
    mixed_precision: str = "no"
    optimizer: str = "adamw"
    projection: str = "auto"
    projection_fit_pairs: int = 2000
    projection_fit_english: int = 0
    share_trunk: bool = True
    cache_teacher: bool = True
    loss: LossOptions = field(default_factory=LossOptions)

    def __post_init__(self) -> None:
        if self.method not in LOSS_METHODS:
            raise ValueError(f"unknown method {self.method!r}; valid methods are {list(LOSS_METHODS)}")
        if self.projection not in PROJECTION_MODES:
            raise ValueError(f"projection must be one of {PROJECTION_MODES}, got {self.projection!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"mixed_precision must be one of {MIXED_PRECISION}, got {self.mixed_precision!r}")
        if not self.student or not self.teacher:
            raise ValueError("student and teacher must be model names or paths")
        if isinstance(self.loss, dict):
            object.__setattr__(self, "loss", LossOptions.from_dict(self.loss))
        if not isinstance(self.loss, LossOptions):
            raise TypeError(f"loss must be LossOptions or a dict, got {type(self.loss).__name__}")
        minimum = {"max_steps": 0, "epochs": 1, "batch_size": 1, "grad_accumulation": 1, "max_length": 4,
                   "freeze_layers": 0, "checkpoint_every": 0, "projection_fit_pairs": 0, "projection_fit_english": 0, "eval_every": 0,
                   "patience": 0, "bucket_window": 1}
        for name, low in minimum.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.weight_decay < 0 or self.max_grad_norm < 0:
            raise ValueError("weight_decay and max_grad_norm must be >= 0")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DistillConfig":
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"unknown distillation option(s) {unknown}; valid options are {known}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # recurses into ``loss``


class TrainingDiverged(ValueError):
    """The weights became non-finite during training (named step); no student is written."""


@dataclass(frozen=True)
class DistillResult:
    """What a distillation run produced.

    Attributes:
        student_dir: the saved student (``SentenceEncoder.from_pretrained(student_dir)``).
        training_args: its ``training_args.json``.
        checkpoint_dir: ``<student_dir>.checkpoints``, or the ``checkpoint_dir`` given to :func:`distill`.
        steps: optimizer steps done in total; resumed_from: the step the run continued from (0 = fresh).
        pairs_seen: pairs trained on (all processes, this invocation); seconds: training wall time
            of this invocation (dev evaluation and checkpoints excluded); pairs_per_second: their ratio.
        dev_metrics: final ``dev_accuracy`` (foreign -> English top-1 among the dev English
            sentences, teacher embeddings) and ``dev_loss``; empty without dev pairs.
        history: one dict per evaluation (step, train_loss, dev metrics).
        stopped_early: early stopping ended the run (the best weights were saved).
        loss_stats: one dict per evaluation point (every ``eval_every`` steps and the last, with or without dev
            pairs): the step and the mean of each of the loss's stats over the training batches since the
            previous one (the main process's batches; for OT: ``ot_plan_entropy``, ``ot_plan_row_max``); empty for
            losses without stats.
    """

    student_dir: Path
    training_args: Path
    checkpoint_dir: Path
    steps: int
    resumed_from: int
    pairs_seen: int
    seconds: float
    pairs_per_second: float
    dev_metrics: dict[str, float]
    history: tuple[dict[str, float], ...]
    stopped_early: bool
    loss_stats: tuple[dict[str, float], ...] = ()


# ---- the student's start ------------------------------------------------------------------------------------


def prepare_student(config: DistillConfig, teacher: Any, train_pairs: Sequence[BitextPair],
                    english: Sequence[str] = ()) -> tuple[Any, dict[str, float]]:
    """Load ``config.student`` and give it its start: the initial map into the teacher's space where it needs
    one (least squares on ``projection_fit_pairs`` training pairs and ``projection_fit_english`` sentences of
    ``english``), or a random projection when only the sizes differ (``projection="never"``).

    Returns the student (nothing frozen yet) and the fit's summary (empty without a fit).
    """
    from clir_eval.distill.losses import match_dimensions
    from clir_eval.models.sentence import SentenceEncoder

    student = SentenceEncoder.from_pretrained(config.student)
    if not wants_projection(config.projection, config.student, config.teacher, student, teacher):
        match_dimensions(student, teacher, seed=config.seed)
        return student, {}
    english = list(english)[: config.projection_fit_english]
    if config.projection_fit_english and len(english) < config.projection_fit_english:
        logger.warning("projection_fit_english=%d but only %d English sentences were given",
                       config.projection_fit_english, len(english))
    student.add_projection(teacher.dim, seed=config.seed)
    info = fit_projection(student, teacher, train_pairs[: config.projection_fit_pairs], config.max_length, english)
    return student, info


def save_start(config: DistillConfig, train_pairs: Sequence[BitextPair], english: Sequence[str],
               out_dir: str | Path) -> Path:
    """Save the untrained student (``student-init``): the backbone with its initial map, no gradient step.

    It is the start every student of ``config`` trains from, and the system each of them is tested against.
    """
    from clir_eval.io import atomic_write
    from clir_eval.models.sentence import SentenceEncoder

    out_dir = Path(out_dir)
    teacher = SentenceEncoder.from_pretrained(config.teacher)
    student, info = prepare_student(config, teacher, train_pairs, english)
    args = {"config": config.to_dict(), "start": info, "steps": 0,
            "data": {"fit_sha256": bitext_sha256(train_pairs[: config.projection_fit_pairs])},
            "versions": _versions()}
    student.save(out_dir, extra={"training_args": TRAINING_ARGS, "method": "init", "teacher": config.teacher})
    with atomic_write(out_dir / TRAINING_ARGS) as handle:
        handle.write(json.dumps(args, indent=2, ensure_ascii=False) + "\n")
    return out_dir


def _trainable_state(student: Any) -> dict[str, Any]:
    return {name: p.detach().clone() for name, p in student.named_parameters() if p.requires_grad}


# ---- evaluation -------------------------------------------------------------------------------------------


def _evaluate(student: Any, teacher: Any, loss_fn: Any, dev: TokenizedBitext,
              batch_size: int) -> tuple[dict[str, float], Counter[str]]:
    """Dev loss and foreign -> English top-1 retrieval accuracy (student queries, teacher English), and the
    loss's diagnostics added up over the dev batches."""
    import torch

    was_training = student.training
    student.eval()
    loss_fn.eval()
    losses, weights, queries, targets = [], [], [], []
    diagnostics: Counter[str] = Counter()
    order = np.argsort(-dev.lengths, kind="stable")
    try:
        with torch.no_grad():
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                encoded = encode_batch(student, teacher, dev.batch(idx), loss_fn.needs())
                result = loss_fn.compute(encoded)
                losses.append(float(result.total()))
                diagnostics.update(result.diagnostics)
                weights.append(len(idx))
                queries.append(torch.nn.functional.normalize(encoded.student["sentence_embedding"].float(), dim=-1))
                targets.append(torch.nn.functional.normalize(encoded.teacher["sentence_embedding"].float(), dim=-1))
    finally:
        student.train(was_training)
        loss_fn.train()
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    q, t = torch.cat(queries)[inverse], torch.cat(targets)[inverse]
    top1 = (q @ t.T).argmax(dim=1).cpu().numpy()
    metrics = {"dev_accuracy": float((top1 == np.arange(len(top1))).mean()),
               "dev_loss": float(np.average(losses, weights=weights))}
    return metrics, diagnostics


# ---- training ---------------------------------------------------------------------------------------------


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for package in ("clir-eval", "torch", "transformers", "accelerate", "tokenizers", "numpy"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "unknown"
    return found


def _shares_trunk(config: DistillConfig, student: Any, needs: Any) -> bool:
    """Whether the frozen lower layers can run once (:class:`clir_eval.distill.data.TrunkStates`)."""
    from clir_eval.models.trunk import has_trunk

    if not (config.share_trunk and config.freeze_embeddings and config.freeze_layers):
        return False
    if needs.student_layer is not None and needs.student_layer < config.freeze_layers:
        return False  # OT reads token states inside the trunk
    return has_trunk(student.backbone)


# ---- setup ------------------------------------------------------------------------------------------------


def _accelerator(config: DistillConfig) -> Any:
    """The ``accelerate.Accelerator`` of this student's run (this process's, under DDP)."""
    import torch
    from accelerate import Accelerator, DistributedDataParallelKwargs
    from accelerate.state import AcceleratorState

    # Token states of an intermediate layer leave the layers above it without gradient under an
    # OT-only loss; DDP must then look for unused parameters.
    intermediate = config.loss.ot_student_layer is not None and config.method == "ot"
    # AcceleratorState is a process-wide singleton that refuses a second mixed_precision, and a study trains its
    # students one after another in one process: forget the last student's settings (the process group stays).
    AcceleratorState._reset_state(reset_partial_state=False)
    # accelerate only sets up multi-process CPU (gloo) when told the run is on CPU.
    accelerator = Accelerator(mixed_precision=config.mixed_precision, cpu=not torch.cuda.is_available(),
                              kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=intermediate)])
    if config.mixed_precision == "bf16" and slow_bf16(accelerator.device.type):
        logger.warning("mixed_precision bf16 on a %s without native bfloat16: training will be many times slower "
                       "than in float32 (18x measured on an AVX2 CPU); set mixed_precision: no on this machine",
                       accelerator.device.type)
    if config.batch_size % accelerator.num_processes:
        raise ValueError(f"batch_size {config.batch_size} must be divisible by the {accelerator.num_processes} "
                         "processes")
    return accelerator


def _total_steps(config: DistillConfig, n_pairs: int) -> int:
    """Optimizer steps of the run: ``max_steps``, else ``epochs`` passes of whole batches."""
    if n_pairs < config.batch_size:
        raise ValueError(f"{n_pairs} training pairs is fewer than one batch ({config.batch_size})")
    per_epoch = n_pairs // config.batch_size
    total = config.max_steps or config.epochs * (per_epoch // config.grad_accumulation)
    if total < 1:
        raise ValueError(f"{per_epoch} batches per epoch is fewer than grad_accumulation={config.grad_accumulation}")
    return total


def _micro_batches(config: DistillConfig, student: Any, teacher: Any, train_pairs: Sequence[BitextPair],
                   needs: Any, total_steps: int, rank: int, world: int) -> MicroBatches:
    """Tokenise the training pairs once and precompute what every step would otherwise recompute: the teacher's
    outputs when a pair is seen more than once, the frozen trunk's states, the bank of drawn negatives."""
    train = TokenizedBitext(train_pairs, student, teacher, config.max_length, needs.student_target)
    sampler = EpochSampler(train.lengths, config.batch_size, config.seed, config.bucket_window)
    passes = total_steps * config.grad_accumulation / len(sampler)
    # Drawn negatives embed every English side before training: that pass is the teacher cache, even in one epoch.
    teacher_cache = (TeacherCache(teacher, train, needs.teacher_layer, needs.teacher_tokens)
                     if config.cache_teacher and (passes > 1 or needs.negatives) else None)
    trunk = shared_trunk(student, train, config.freeze_layers) if _shares_trunk(config, student, needs) else None
    negatives = None
    if needs.negatives:
        embedded = teacher_cache if teacher_cache is not None else TeacherCache(teacher, train, None, tokens=False)
        negatives = NegativeBank(embedded.sentence, [pair.target for pair in train_pairs], needs.negatives)
        outside = len(train_pairs) - config.batch_size
        logger.info("contrastive: %d more negatives per step, drawn from the %d English sides outside its batch",
                    min(needs.negatives, outside), outside)
    return MicroBatches(train, sampler, rank, config.batch_size // world, negatives, trunk, teacher_cache)


def _optimizer(config: DistillConfig, student: Any, total_steps: int) -> tuple[list[Any], Any, Any]:
    """The trainable parameters, their optimizer, and the linear warm-up-then-decay schedule."""
    import torch
    from transformers import get_linear_schedule_with_warmup

    params = [p for p in student.parameters() if p.requires_grad]
    optimizer_class = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.SGD
    optimizer = optimizer_class(params, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, round(config.warmup_ratio * total_steps), total_steps)
    return params, optimizer, scheduler


# ---- the loop ---------------------------------------------------------------------------------------------


@dataclass
class _Training:
    """One student's training loop: what it steps (the prepared model, optimizer, schedule, batches) and what it
    counts (:class:`~clir_eval.distill.checkpoints.TrainState`, the loss's diagnostics, time and pairs)."""

    config: DistillConfig
    accelerator: Any
    model: Any  # prepared by accelerate: DDP-wrapped under several processes
    teacher: Any
    loss_fn: Any
    batches: MicroBatches
    dev: TokenizedBitext | None
    params: list[Any]
    optimizer: Any
    scheduler: Any
    total_steps: int
    checkpoint_dir: Path
    data_sha256: str
    state: ckpt.TrainState = field(default_factory=ckpt.TrainState)
    diagnostics: Counter[str] = field(default_factory=Counter)  # over this invocation's training and dev batches
    seconds: float = 0.0
    pairs_seen: int = 0
    report: Any = None  # the running step's clir_eval.progress.Progress
    dev_note: str = ""  # the last dev accuracy, shown beside the running loss
    needs: Any = field(init=False)  # what the loss reads, asked once

    def __post_init__(self) -> None:
        self.needs = self.loss_fn.needs()

    @property
    def unwrapped(self) -> Any:
        return self.accelerator.unwrap_model(self.model)

    def run(self, show_progress: bool, on_step: Callable[[int], None] | None) -> None:
        """Step to ``total_steps`` (or an early stop), evaluating and checkpointing as configured."""
        config, state = self.config, self.state
        main = self.accelerator.is_main_process
        # A bar on a terminal, count, rate, ETA and loss in the log every 10 s otherwise (a study's log file);
        # the other processes of a launcher stay silent.
        with progress(f"distill {config.method}", total=self.total_steps, unit="steps", done=state.step,
                      show=show_progress and main, interval=LOG_INTERVAL if main else math.inf) as self.report:
            while state.step < self.total_steps and not state.stopped_early:
                self.step()
                last = state.step == self.total_steps
                at_evaluation = bool(config.eval_every and state.step % config.eval_every == 0) or last
                if at_evaluation:
                    self.record_stats()
                if self.dev is not None and at_evaluation:
                    self.evaluate()
                if (config.checkpoint_every and state.step % config.checkpoint_every == 0) or last \
                        or state.stopped_early:
                    self.checkpoint()
                if on_step is not None:
                    on_step(state.step)
        if self.diagnostics[SINKHORN_UNCONVERGED]:
            logger.warning("Sinkhorn hit ot_max_iter=%d before ot_tol in %d batches; the plans were used as they were",
                           config.loss.ot_max_iter, self.diagnostics[SINKHORN_UNCONVERGED])
        if state.stopped_early and state.best_state is not None:
            self.unwrapped.load_state_dict(state.best_state, strict=False)

    def step(self) -> None:
        """One optimizer step over ``grad_accumulation`` micro-batches (gradients synchronised on the last)."""
        config, state, accelerator = self.config, self.state, self.accelerator
        started = time.perf_counter()
        for k in range(config.grad_accumulation):
            batch = self.batches(state.micro)
            sync = contextlib.nullcontext() if k == config.grad_accumulation - 1 else accelerator.no_sync(self.model)
            with sync:
                with accelerator.autocast():
                    result = self.loss_fn.compute(encode_batch(self.model, self.teacher, batch, self.needs))
                    loss = result.total()
                accelerator.backward(loss / config.grad_accumulation)
            state.add_loss(float(loss.detach()), {name: float(p.detach()) for name, p in result.parts.items()})
            self.diagnostics.update(result.diagnostics)
            state.add_stats(result.stats)
            state.micro += 1
        if config.max_grad_norm:
            accelerator.clip_grad_norm_(self.params, config.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        state.step += 1
        self.check_finite()
        self.seconds += time.perf_counter() - started
        self.pairs_seen += config.batch_size * config.grad_accumulation
        self.report.set_note(", ".join(filter(None, [f"loss {state.running / state.running_n:.4f}", self.dev_note])))
        self.report.advance()

    def check_finite(self) -> None:
        """Stop at the first step whose update left a trainable weight NaN or infinite (a diverged run would
        otherwise train on, and save, a student that retrieves nothing).

        Weights, not the loss, are checked: under fp16 an infinite loss is the scaler's business (it skips that
        step), and after a synchronised step every process holds the same weights, so all of them stop together.
        """
        import torch

        params = [(name, p.detach()) for name, p in self.unwrapped.named_parameters() if p.requires_grad]
        # NaN and inf survive a sum: one sum per tensor is a tenth of the cost of isfinite over every weight (4 ms
        # against 45 ms for a 21M-parameter student on one CPU thread); a flagged tensor is then checked exactly.
        sums = torch.isfinite(torch.stack([p.sum().float() for _, p in params]))
        if bool(sums.all()):
            return
        bad = [name for (name, p), ok in zip(params, sums.tolist()) if not ok and not bool(torch.isfinite(p).all())]
        if not bad:
            return  # a finite tensor whose sum overflowed
        state, first = self.state, bad[0]
        loss = state.running / state.running_n if state.running_n else float("nan")
        raise TrainingDiverged(
            f"training diverged at step {state.step}: the optimizer step left non-finite weights (nan or inf), "
            f"first in {first} (training loss {loss:.4g}, lr {self.config.lr}); training stopped and no student "
            "was written. Lower lr, or clip gradients with max_grad_norm")

    def record_stats(self) -> None:
        """The loss's stats since the last evaluation point (e.g. how sharp the OT plans are) into their record
        and the log."""
        state = self.state
        stats = state.take_stats()
        if not stats:
            return
        state.stats_history.append({"step": state.step, **stats})
        logger.info("step %d: %s", state.step, ", ".join(f"{name} {value:.4f}" for name, value in stats.items()))

    def evaluate(self) -> None:
        """Dev metrics into the history and the log, then the early-stopping bookkeeping."""
        state = self.state
        metrics, dev_diagnostics = _evaluate(self.unwrapped, self.teacher, self.loss_fn, self.dev,
                                             self.config.batch_size)
        self.diagnostics.update(dev_diagnostics)
        train_loss, train_parts = state.take_loss()
        # The parts stay out of the history: it is written to training_args.json, which studies' caches read.
        state.history.append({"step": state.step, "train_loss": train_loss, **metrics})
        self.dev_note = f"dev acc {metrics['dev_accuracy']:.3f} (step {state.step})"  # shown until the next one
        parts = ", ".join(f"{name} {value:.4f}" for name, value in train_parts.items())
        logger.info("step %d: train loss %.4f%s, dev accuracy %.4f, dev loss %.4f", state.step, train_loss,
                    f" ({parts})" if len(train_parts) > 1 else "", metrics["dev_accuracy"], metrics["dev_loss"])
        self.track_best(metrics["dev_accuracy"])

    def track_best(self, accuracy: float) -> None:
        """Early stopping: keep the best weights (with ``patience``) and stop after ``patience`` worse evaluations."""
        state, patience = self.state, self.config.patience
        if accuracy > state.best_accuracy:
            state.best_accuracy, state.bad_evals = accuracy, 0
            state.best_state = _trainable_state(self.unwrapped) if patience else None
            return
        state.bad_evals += 1
        if patience and state.bad_evals >= patience:
            state.stopped_early = True
            logger.info("early stop at step %d: no better dev accuracy in %d evaluations", state.step,
                        state.bad_evals)

    def checkpoint(self) -> None:
        """Every process's RNG state, then (main process) weights, optimizer, schedule and state, atomically."""
        state, accelerator, rank = self.state, self.accelerator, self.accelerator.process_index
        state_file = ckpt.state_path(self.checkpoint_dir, state.step)
        ckpt.save_tree(ckpt.rng_state(), ckpt.rng_path(state_file, rank))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            ckpt.save_tree({"config": self.config.to_dict(), "data_sha256": self.data_sha256,
                            "trainable": _trainable_state(self.unwrapped), "optimizer": self.optimizer.state_dict(),
                            "scheduler": self.scheduler.state_dict(), "state": state.state_dict()}, state_file)
            ckpt.prune(self.checkpoint_dir, accelerator.num_processes)
        accelerator.wait_for_everyone()

    def resume(self) -> int:
        """Continue from the newest checkpoint, if any; returns its step (0: a fresh start).

        Raises:
            CheckpointError: the checkpoint is pickled, unreadable, or incomplete (nothing of it is run or used).
            ValueError: it was written by another configuration or bitext.
        """
        world, rank = self.accelerator.num_processes, self.accelerator.process_index
        latest = ckpt.latest_checkpoint(self.checkpoint_dir, world) if self.checkpoint_dir.is_dir() else None
        if latest is None:
            logger.info("no checkpoint in %s: starting afresh", self.checkpoint_dir)
            return 0
        saved = ckpt.load_tree(latest)
        rng = ckpt.load_tree(ckpt.rng_path(latest, rank))
        expected = {"config", "data_sha256", "trainable", "optimizer", "scheduler", "state"}
        if not isinstance(saved, dict) or expected - set(saved) or not isinstance(rng, dict):
            raise ckpt.CheckpointError(f"{latest}: an incomplete checkpoint; delete {self.checkpoint_dir} to train "
                                       "afresh")
        # Compared as JSON, the form the checkpoint keeps it in.
        same_config = json.dumps(saved["config"], sort_keys=True) == json.dumps(self.config.to_dict(), sort_keys=True)
        if not same_config or saved["data_sha256"] != self.data_sha256:
            raise ValueError(f"{latest} was written by a different configuration or bitext; cannot resume")
        missing = set(_trainable_state(self.unwrapped)) ^ set(saved["trainable"])
        if missing:
            raise ValueError(f"{latest}: trainable parameters differ: {sorted(missing)[:5]}")
        self.unwrapped.load_state_dict(saved["trainable"], strict=False)
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.state.load_state_dict(saved["state"])
        ckpt.set_rng_state(rng)
        logger.info("resumed from %s (step %d)", latest, self.state.step)
        return self.state.step

    def dev_metrics(self) -> dict[str, float]:
        """The final dev metrics: the best evaluation's after an early stop (its weights were kept), else the last."""
        history = self.state.history
        if not history:
            return {}
        best = max(history, key=lambda h: h["dev_accuracy"]) if self.state.stopped_early else history[-1]
        return {"dev_accuracy": best["dev_accuracy"], "dev_loss": best["dev_loss"]}


# ---- the run ----------------------------------------------------------------------------------------------


def distill(
    config: DistillConfig,
    train_pairs: Sequence[BitextPair],
    dev_pairs: Sequence[BitextPair],
    out_dir: str | Path,
    resume: bool = False,
    *,
    english: Sequence[str] = (),
    show_progress: bool = True,
    on_step: Callable[[int], None] | None = None,
    checkpoint_dir: str | Path | None = None,
) -> DistillResult:
    """Distil ``config.student`` towards ``config.teacher`` on bitext and save the student to ``out_dir``.

    Args:
        config: the run's settings.
        train_pairs: foreign (``source``) - English (``target``) pairs to train on.
        dev_pairs: held-out pairs for dev accuracy/loss (may be empty).
        out_dir: the student directory; checkpoints go to ``<out_dir>.checkpoints``.
        resume: continue from the newest checkpoint there (a fresh start if there is none).
        english: English sentences for the initial map (``projection_fit_english`` of them are read).
        show_progress: rich progress bar on the main process.
        on_step: called with the step number after each optimizer step and its checkpoint
            (an exception raised there interrupts the run like a crash; used in tests).
        checkpoint_dir: where checkpoints go (default ``<out_dir>.checkpoints``); a study gives a path keyed like
            the student's step, since it trains into a temporary directory.

    Returns:
        A :class:`DistillResult`; ``SentenceEncoder.from_pretrained(out_dir)`` loads the student.

    Raises:
        TrainingDiverged: a step left non-finite weights (no student is written).
        CheckpointError: ``resume`` found a checkpoint that is pickled, unreadable or incomplete.
    """
    import torch

    from clir_eval.models.sentence import SentenceEncoder

    out_dir = Path(out_dir)
    accelerator = _accelerator(config)
    rank, world = accelerator.process_index, accelerator.num_processes
    total_steps = _total_steps(config, len(train_pairs))
    torch.manual_seed(config.seed + rank)
    random.seed(config.seed + rank)
    np.random.seed(config.seed + rank)
    teacher = SentenceEncoder.from_pretrained(config.teacher)
    teacher.requires_grad_(False).eval().to(accelerator.device)
    student, start_info = prepare_student(config, teacher, train_pairs, english)
    freeze(student, embeddings=config.freeze_embeddings, layers=config.freeze_layers, dropout=config.dropout,
           projection=config.freeze_projection)
    student.to(accelerator.device).train()
    loss_fn = build_loss(config.method, config.loss)
    needs = loss_fn.needs()
    batches = _micro_batches(config, student, teacher, train_pairs, needs, total_steps, rank, world)
    dev = TokenizedBitext(dev_pairs, student, teacher, config.max_length, needs.student_target) if dev_pairs else None
    params, optimizer, scheduler = _optimizer(config, student, total_steps)
    n_trainable, n_total = sum(p.numel() for p in params), sum(p.numel() for p in student.parameters())
    logger.info("student %s: %s of %s parameters trainable; teacher %s; %d steps of %d pairs on %d process(es)",
                config.student, f"{n_trainable:,}", f"{n_total:,}", config.teacher, total_steps,
                config.batch_size * config.grad_accumulation, world)
    # The scheduler is not prepared: accelerate would step it once per process.
    model, optimizer = accelerator.prepare(student, optimizer)
    # The teacher's states of each batch are kept for the next student of this process (same batches, same states).
    training = _Training(config=config, accelerator=accelerator, model=model, teacher=SharedTeacher(teacher),
                         loss_fn=loss_fn, batches=batches, dev=dev, params=params, optimizer=optimizer,
                         scheduler=scheduler, total_steps=total_steps,
                         checkpoint_dir=Path(checkpoint_dir) if checkpoint_dir else ckpt.checkpoint_dir(out_dir),
                         data_sha256=bitext_sha256(train_pairs))
    resumed_from = training.resume() if resume else 0
    training.run(show_progress, on_step)
    _save(training, out_dir, _training_args(training, start_info, train_pairs, dev_pairs))
    state = training.state
    return DistillResult(
        student_dir=out_dir, training_args=out_dir / TRAINING_ARGS, checkpoint_dir=training.checkpoint_dir,
        steps=state.step, resumed_from=resumed_from, pairs_seen=training.pairs_seen, seconds=training.seconds,
        pairs_per_second=training.pairs_seen / training.seconds if training.seconds else 0.0,
        dev_metrics=training.dev_metrics(), history=tuple(state.history), stopped_early=state.stopped_early,
        loss_stats=tuple(state.stats_history),
    )


def _training_args(training: _Training, start_info: dict[str, float], train_pairs: Sequence[BitextPair],
                   dev_pairs: Sequence[BitextPair]) -> dict[str, Any]:
    """The saved student's ``training_args.json``: config, loss, start, data hashes, history, loss stats, versions."""
    config, state, loss_fn = training.config, training.state, training.loss_fn
    # Only losses with stats add the key, so the others' training_args keep their shape.
    stats = {"loss_stats": state.stats_history} if state.stats_history else {}
    return {
        "config": config.to_dict(),
        "loss": {"method": config.method, "class": type(loss_fn).__name__, **loss_fn.get_config_dict()},
        "start": start_info,
        "data": {"train_pairs": len(train_pairs), "train_sha256": training.data_sha256,
                 "dev_pairs": len(dev_pairs), "dev_sha256": bitext_sha256(dev_pairs),
                 "languages": sorted({f"{p.source_lang}-{p.target_lang}" for p in train_pairs})},
        "steps": state.step, "processes": training.accelerator.num_processes, "dev_metrics": training.dev_metrics(),
        "history": state.history, "stopped_early": state.stopped_early, **stats, "versions": _versions(),
    }


def _save(training: _Training, out_dir: Path, args: dict[str, Any]) -> None:
    """The main process writes the student and its ``training_args.json`` (each atomically)."""
    from clir_eval.io import atomic_write

    accelerator = training.accelerator
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        training.unwrapped.save(out_dir, extra={"training_args": TRAINING_ARGS, "method": training.config.method,
                                                "teacher": training.config.teacher})
        with atomic_write(out_dir / TRAINING_ARGS) as handle:
            handle.write(json.dumps(args, indent=2, ensure_ascii=False) + "\n")
    accelerator.wait_for_everyone()
