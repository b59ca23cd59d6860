"""Train a student query encoder from bitext against a frozen teacher (KD, OT, contrastive, combined).

``distill(config, train_pairs, dev_pairs, out_dir)`` runs under ``accelerate`` (one CPU/GPU, or
DDP under ``accelerate launch`` / ``torchrun``). Design points:

* every optimizer step sees ``batch_size * grad_accumulation`` pairs however many processes run:
  each process takes a contiguous slice of the global micro-batch (``batch_size`` must divide
  by the number of processes), so a 2-process run follows the 1-process run;
* batches are length-bucketed (shuffle, sort windows of ``bucket_window`` batches by length,
  shuffle the batches) from ``numpy.random.default_rng([seed, epoch])``: the data order is a
  pure function of (seed, epoch), so a checkpoint only stores the micro-batch counter;
* the teacher runs under ``no_grad``; the student's embedding layer (for multilingual models
  the bulk of the parameters, e.g. 250k x 384 for multilingual-e5-small) is frozen by default
  and gets neither gradients nor optimizer state;
* checkpoints (trainable weights, optimizer, scheduler, RNG per process, data position, early
  stopping state) are written atomically to ``<out_dir>.checkpoints/``; ``resume=True``
  continues from the newest one to the same final weights as an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import platform
import random
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from clir_eval.collections.records import BitextPair
from clir_eval.distill.losses import LOSS_METHODS, DistillBatch, LossOptions, build_loss, encode_batch

logger = logging.getLogger(__name__)

MIXED_PRECISION = ("no", "fp16", "bf16")
PROJECTION_MODES = ("auto", "always", "never")
TRAINING_ARGS = "training_args.json"
_KEEP_CHECKPOINTS = 2


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
        lr, warmup_ratio, weight_decay, max_grad_norm (0 = no clipping): AdamW with linear warm-up then decay.
        seed: data order, projection initialisation, dropout.
        max_length: token cap of both sides during training.
        freeze_embeddings: freeze the student's embedding module (word, position, type, norm).
        freeze_layers: also freeze the lowest N transformer layers.
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
            pairs, closed form): with a few hundred steps of budget, learning the rotation between two
            unrelated spaces by gradient descent alone would use the whole budget.
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
    dropout: bool = True
    checkpoint_every: int = 0
    eval_every: int = 0
    patience: int = 0
    bucket_window: int = 50
    mixed_precision: str = "no"
    projection: str = "auto"
    projection_fit_pairs: int = 2000
    cache_teacher: bool = True
    loss: LossOptions = field(default_factory=LossOptions)

    def __post_init__(self) -> None:
        if self.method not in LOSS_METHODS:
            raise ValueError(f"unknown method {self.method!r}; valid methods are {list(LOSS_METHODS)}")
        if self.projection not in PROJECTION_MODES:
            raise ValueError(f"projection must be one of {PROJECTION_MODES}, got {self.projection!r}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"mixed_precision must be one of {MIXED_PRECISION}, got {self.mixed_precision!r}")
        if not self.student or not self.teacher:
            raise ValueError("student and teacher must be model names or paths")
        if isinstance(self.loss, dict):
            object.__setattr__(self, "loss", LossOptions.from_dict(self.loss))
        if not isinstance(self.loss, LossOptions):
            raise TypeError(f"loss must be LossOptions or a dict, got {type(self.loss).__name__}")
        minimum = {"max_steps": 0, "epochs": 1, "batch_size": 1, "grad_accumulation": 1, "max_length": 4,
                   "freeze_layers": 0, "checkpoint_every": 0, "projection_fit_pairs": 1, "eval_every": 0, "patience": 0, "bucket_window": 1}
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
        data = asdict(self)
        data["loss"] = self.loss.to_dict()
        return data


@dataclass(frozen=True)
class DistillResult:
    """What a distillation run produced.

    Attributes:
        student_dir: the saved student (``SentenceEncoder.from_pretrained(student_dir)``).
        training_args: its ``training_args.json``.
        checkpoint_dir: ``<student_dir>.checkpoints``.
        steps: optimizer steps done in total; resumed_from: the step the run continued from (0 = fresh).
        pairs_seen: pairs trained on (all processes, this invocation); seconds: training wall time
            of this invocation (dev evaluation and checkpoints excluded); pairs_per_second: their ratio.
        dev_metrics: final ``dev_accuracy`` (foreign -> English top-1 among the dev English
            sentences, teacher embeddings) and ``dev_loss``; empty without dev pairs.
        history: one dict per evaluation (step, train_loss, dev metrics).
        stopped_early: early stopping ended the run (the best weights were saved).
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


# ---- data -------------------------------------------------------------------------------------------------


def bitext_sha256(pairs: Sequence[BitextPair]) -> str:
    """SHA-256 over the pairs in order (one JSON array per pair), tracing a student to its exact data."""
    digest = hashlib.sha256()
    for pair in pairs:
        digest.update(json.dumps(list(pair), ensure_ascii=False).encode("utf-8") + b"\n")
    return digest.hexdigest()


def epoch_batches(lengths: np.ndarray, batch_size: int, seed: int, epoch: int, window: int) -> list[np.ndarray]:
    """Length-bucketed batches of indices for one epoch, all of exactly ``batch_size``.

    Shuffle, drop the remainder (so every step has the same global batch), sort windows of
    ``window`` batches by length, cut into batches, shuffle the batches. Deterministic in (seed, epoch).
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))[: len(lengths) // batch_size * batch_size]
    batches = []
    span = batch_size * window
    for start in range(0, len(order), span):
        chunk = order[start : start + span]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


class _Tokenized:
    """Bitext tokenised once (no padding); ``batch(indices)`` pads a DistillBatch."""

    def __init__(self, pairs: Sequence[BitextPair], student: Any, teacher: Any, max_length: int,
                 student_target: bool) -> None:
        def encode(model: Any, texts: list[str]) -> dict[str, list]:
            prefix = model.config.query_prefix
            return dict(model.tokenizer([prefix + t for t in texts] if prefix else texts, truncation=True,
                                        max_length=max_length, return_special_tokens_mask=True))

        self.student_tok, self.teacher_tok = student.tokenizer, teacher.tokenizer
        self.source = encode(student, [p.source for p in pairs])
        self.target = encode(teacher, [p.target for p in pairs])
        self.student_target = encode(student, [p.target for p in pairs]) if student_target else None
        self.lengths = np.array([max(len(a), len(b)) for a, b in
                                 zip(self.source["input_ids"], self.target["input_ids"])], dtype=np.int64)

    @staticmethod
    def _pad(tokenizer: Any, data: dict[str, list], indices: Sequence[int]) -> dict:
        # Lengths rounded up to a multiple of 8: few distinct shapes, so CPU kernels (oneDNN)
        # reuse their prepared primitives instead of re-creating them for every new length.
        return dict(tokenizer.pad({k: [v[i] for i in indices] for k, v in data.items()}, pad_to_multiple_of=8,
                                  return_tensors="pt"))

    def pad_target(self, indices: Sequence[int]) -> dict:
        """The teacher's features of the English sides of ``indices`` (padded as in :meth:`batch`)."""
        return self._pad(self.teacher_tok, self.target, indices)

    def batch(self, indices: Sequence[int]) -> DistillBatch:
        return DistillBatch(
            source=self._pad(self.student_tok, self.source, indices),
            target=self.pad_target(indices),
            student_target=None if self.student_target is None else self._pad(self.student_tok, self.student_target,
                                                                              indices),
        )


class _TeacherCache:
    """The frozen teacher's outputs for every training pair, computed once before training.

    Computed in a fixed order (length-sorted batches), so a resumed run rebuilds exactly the same cache.
    Only what the loss reads is kept: the sentence embedding, and for token-level losses the token states of
    the real (unpadded) positions; masks come from each batch's own features.
    """

    def __init__(self, teacher: Any, data: _Tokenized, layer: int | None, tokens: bool,
                 batch_size: int = 64) -> None:
        from clir_eval.distill.losses import teacher_outputs

        self.tokens = tokens
        self.sentence: list[Any] = [None] * len(data.lengths)
        self.states: list[Any] = [None] * len(data.lengths)
        order = np.argsort(data.lengths, kind="stable")
        for start in range(0, len(order), batch_size):
            indices = order[start : start + batch_size]
            target = data.pad_target(indices)
            out = teacher_outputs(teacher, target, layer)
            for row, (i, n) in enumerate(zip(indices, target["attention_mask"].sum(dim=1).tolist())):
                self.sentence[i] = out["sentence_embedding"][row].clone()
                if tokens:
                    self.states[i] = out["token_embeddings"][row, :n].clone()

    def outputs(self, target: dict, indices: Sequence[int]) -> dict:
        """The teacher's outputs for a batch of pairs, padded like ``target`` (the batch's teacher features)."""
        import torch

        first = self.sentence[indices[0]]
        out = {k: v.to(first.device) for k, v in target.items() if k in ("attention_mask", "special_tokens_mask")}
        out["sentence_embedding"] = torch.stack([self.sentence[i] for i in indices])
        if self.tokens:
            states = first.new_zeros((len(indices), target["input_ids"].shape[1], first.shape[-1]))
            for row, (i, n) in enumerate(zip(indices, target["attention_mask"].sum(dim=1).tolist())):
                states[row, :n] = self.states[i]
            out["token_embeddings"] = states
        return out


# ---- model setup ------------------------------------------------------------------------------------------


def _transformer_layers(backbone: Any) -> Any:
    """The ModuleList of transformer blocks (the one whose length is num_hidden_layers)."""
    import torch

    count = int(backbone.config.num_hidden_layers)
    for _, module in backbone.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == count:
            return module
    raise ValueError(f"cannot find the {count} transformer layers of {type(backbone).__name__} to freeze")


def _freeze(student: Any, config: DistillConfig) -> None:
    import torch

    if config.freeze_embeddings:
        student.backbone.get_input_embeddings().weight.requires_grad_(False)
        embeddings = getattr(student.backbone, "embeddings", None)
        if isinstance(embeddings, torch.nn.Module):
            embeddings.requires_grad_(False)
    pooler = getattr(student.backbone, "pooler", None)
    if isinstance(pooler, torch.nn.Module):
        # BERT's pooler head is never used (the encoder pools itself): no gradient, no optimizer
        # state, and DDP must not wait for its gradients.
        pooler.requires_grad_(False)
    if config.freeze_layers:
        layers = _transformer_layers(student.backbone)
        if config.freeze_layers > len(layers):
            raise ValueError(f"freeze_layers={config.freeze_layers} but the student has {len(layers)} layers")
        for layer in layers[: config.freeze_layers]:
            layer.requires_grad_(False)
    if not config.dropout:
        for module in student.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0  # BERT-style attention reads dropout.p, so this also disables attention dropout


def _wants_projection(config: DistillConfig, student: Any, teacher: Any) -> bool:
    if student.projection is not None or config.projection == "never":
        return False  # a saved student keeps its projection; "never" leaves size mismatches to match_dimensions
    if config.projection == "always" or student.dim != teacher.dim:
        return True
    from clir_eval.models.registry import resolve_model

    return resolve_model(config.student).local_path() != resolve_model(config.teacher).local_path()


def _state_sha256(module: Any) -> str:
    """SHA-256 of a module's weights (names and bytes), whatever directory they came from."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


# Least-squares projections already fitted in this process, by everything the fit reads. A study distils
# several students (KD, OT, contrastive, ...) from one backbone on the same bitext: their fits are equal,
# and each costs a forward pass of both models over the fit pairs.
_FITTED_PROJECTIONS: dict[str, Any] = {}


def _fit_projection(student: Any, teacher: Any, pairs: Sequence[BitextPair], max_length: int,
                    ridge: float = 1e-3, batch_size: int = 64) -> None:
    """Set ``student.projection`` to the ridge least-squares map ``W = argmin |X W - T|^2 + ridge |W|^2``,
    X the student's pooled (unprojected) states of the foreign sides, T the teacher's embeddings of the
    English sides. Pooling is linear, so the map applies to token states as well."""
    import torch

    from clir_eval.models.pooling import pool

    key = json.dumps([_state_sha256(student.backbone), _state_sha256(teacher), bitext_sha256(pairs), max_length,
                      ridge, student.config.to_dict(), teacher.config.to_dict()], sort_keys=True, default=str)
    if key in _FITTED_PROJECTIONS:
        with torch.no_grad():
            student.projection.weight.copy_(_FITTED_PROJECTIONS[key])
        logger.info("projection %d -> %d: least-squares fit reused (same models and pairs)",
                    student.hidden_size, student.dim)
        return

    tokenized = _Tokenized(pairs, student, teacher, max_length, student_target=False)
    order = np.argsort(tokenized.lengths, kind="stable")  # little padding
    targets = [pairs[i].target for i in order]
    pooled = []
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            batch = tokenized.batch(order[start : start + batch_size])
            features = {k: v.to(student.device) for k, v in batch.source.items()
                        if k in ("input_ids", "attention_mask", "token_type_ids")}
            states = student.backbone(**features, return_dict=True).last_hidden_state
            pooled.append(pool(states, features["attention_mask"], student.config.pooling).double().cpu())
    x = torch.cat(pooled)
    t = torch.from_numpy(teacher.encode(targets, role="query", batch_size=batch_size)).double()
    gram = x.T @ x
    weights = torch.linalg.solve(gram + ridge * gram.diagonal().mean() * torch.eye(x.shape[1], dtype=x.dtype),
                                 x.T @ t)
    with torch.no_grad():
        student.projection.weight.copy_(weights.T.to(student.projection.weight.dtype))
    _FITTED_PROJECTIONS[key] = student.projection.weight.detach().clone()
    residual = float(((x @ weights - t) ** 2).sum(dim=1).mean())
    logger.info("projection %d -> %d fitted by least squares on %d pairs (mean squared residual %.4f)",
                x.shape[1], t.shape[1], len(pairs), residual)


def _trainable_state(student: Any) -> dict[str, Any]:
    return {name: p.detach().clone() for name, p in student.named_parameters() if p.requires_grad}


# ---- checkpoints ------------------------------------------------------------------------------------------


def _checkpoint_dir(out_dir: Path) -> Path:
    return out_dir.with_name(out_dir.name + ".checkpoints")


def _latest_checkpoint(directory: Path, world_size: int) -> Path | None:
    """Newest complete checkpoint: its state file plus one RNG file per process."""
    found = []
    for path in directory.glob("step-*.pt"):
        stem = path.name[: -len(".pt")]
        if stem.count(".") == 0 and all((directory / f"{stem}.rng{r}.pt").is_file() for r in range(world_size)):
            found.append((int(stem.split("-")[1]), path))
    return max(found)[1] if found else None


def _rng_state() -> dict[str, Any]:
    import torch

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _save_torch(obj: Any, path: Path) -> None:
    import torch

    from clir_eval.io import atomic_write

    with atomic_write(path, "wb", encoding=None) as handle:
        torch.save(obj, handle)


# ---- evaluation -------------------------------------------------------------------------------------------


def _evaluate(student: Any, teacher: Any, loss_fn: Any, dev: _Tokenized, batch_size: int) -> dict[str, float]:
    """Dev loss and foreign -> English top-1 retrieval accuracy (student queries, teacher English)."""
    import torch

    was_training = student.training
    student.eval()
    loss_fn.eval()
    losses, weights, queries, targets = [], [], [], []
    order = np.argsort(-dev.lengths, kind="stable")
    try:
        with torch.no_grad():
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                encoded = encode_batch(student, teacher, dev.batch(idx), loss_fn.needs())
                losses.append(float(loss_fn.compute(encoded)))
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
    return {"dev_accuracy": float((top1 == np.arange(len(top1))).mean()),
            "dev_loss": float(np.average(losses, weights=weights))}


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


def distill(
    config: DistillConfig,
    train_pairs: Sequence[BitextPair],
    dev_pairs: Sequence[BitextPair],
    out_dir: str | Path,
    resume: bool = False,
    *,
    show_progress: bool = True,
    on_step: Callable[[int], None] | None = None,
) -> DistillResult:
    """Distil ``config.student`` towards ``config.teacher`` on bitext and save the student to ``out_dir``.

    Args:
        config: the run's settings.
        train_pairs: foreign (``source``) - English (``target``) pairs to train on.
        dev_pairs: held-out pairs for dev accuracy/loss (may be empty).
        out_dir: the student directory; checkpoints go to ``<out_dir>.checkpoints``.
        resume: continue from the newest checkpoint there (a fresh start if there is none).
        show_progress: rich progress bar on the main process.
        on_step: called with the step number after each optimizer step and its checkpoint
            (an exception raised there interrupts the run like a crash; used in tests).

    Returns:
        A :class:`DistillResult`; ``SentenceEncoder.from_pretrained(out_dir)`` loads the student.
    """
    import torch
    from accelerate import Accelerator, DistributedDataParallelKwargs
    from transformers import get_linear_schedule_with_warmup

    from clir_eval.distill.losses import match_dimensions
    from clir_eval.io import atomic_write
    from clir_eval.models.sentence import SentenceEncoder

    out_dir = Path(out_dir)
    ckpt_dir = _checkpoint_dir(out_dir)
    # Token states of an intermediate layer leave the layers above it without gradient under an
    # OT-only loss; DDP must then look for unused parameters.
    intermediate = config.loss.ot_student_layer is not None and config.method == "ot"
    # accelerate only sets up multi-process CPU (gloo) when told the run is on CPU.
    accelerator = Accelerator(mixed_precision=config.mixed_precision, cpu=not torch.cuda.is_available(),
                              kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=intermediate)])
    rank, world = accelerator.process_index, accelerator.num_processes
    if config.batch_size % world:
        raise ValueError(f"batch_size {config.batch_size} must be divisible by the {world} processes")
    local_size = config.batch_size // world
    if len(train_pairs) < config.batch_size:
        raise ValueError(f"{len(train_pairs)} training pairs is fewer than one batch ({config.batch_size})")

    torch.manual_seed(config.seed + rank)
    random.seed(config.seed + rank)
    np.random.seed(config.seed + rank)
    teacher = SentenceEncoder.from_pretrained(config.teacher)
    teacher.requires_grad_(False).eval().to(accelerator.device)
    student = SentenceEncoder.from_pretrained(config.student)
    if _wants_projection(config, student, teacher):
        student.add_projection(teacher.dim, seed=config.seed)
        _fit_projection(student, teacher, train_pairs[: config.projection_fit_pairs], config.max_length)
    else:
        match_dimensions(student, teacher, seed=config.seed)
    _freeze(student, config)
    student.to(accelerator.device).train()
    loss_fn = build_loss(config.method, config.loss)
    needs = loss_fn.needs()

    train = _Tokenized(train_pairs, student, teacher, config.max_length, needs.student_target)
    dev = _Tokenized(dev_pairs, student, teacher, config.max_length, needs.student_target) if dev_pairs else None
    per_epoch = len(train_pairs) // config.batch_size
    total_steps = config.max_steps or config.epochs * (per_epoch // config.grad_accumulation)
    if total_steps < 1:
        raise ValueError(f"{per_epoch} batches per epoch is fewer than grad_accumulation={config.grad_accumulation}")

    passes = total_steps * config.grad_accumulation / per_epoch
    teacher_cache = (_TeacherCache(teacher, train, needs.teacher_layer, needs.teacher_tokens)
                     if config.cache_teacher and passes > 1 else None)

    params = [p for p in student.parameters() if p.requires_grad]
    n_trainable, n_total = sum(p.numel() for p in params), sum(p.numel() for p in student.parameters())
    logger.info("student %s: %s of %s parameters trainable; teacher %s; %d steps of %d pairs on %d process(es)",
                config.student, f"{n_trainable:,}", f"{n_total:,}", config.teacher, total_steps,
                config.batch_size * config.grad_accumulation, world)
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, round(config.warmup_ratio * total_steps), total_steps)
    # The scheduler is not prepared: accelerate would step it once per process.
    model, optimizer = accelerator.prepare(student, optimizer)
    unwrapped = accelerator.unwrap_model(model)

    step = micro = 0
    running, running_n = 0.0, 0
    best_accuracy, bad_evals, best_state = -1.0, 0, None
    history: list[dict[str, float]] = []
    stopped_early = False
    resumed_from = 0
    if resume:
        latest = _latest_checkpoint(ckpt_dir, world) if ckpt_dir.is_dir() else None
        if latest is None:
            logger.info("no checkpoint in %s: starting afresh", ckpt_dir)
        else:
            state = torch.load(latest, map_location="cpu", weights_only=False)
            if state["config"] != config.to_dict() or state["data_sha256"] != bitext_sha256(train_pairs):
                raise ValueError(f"{latest} was written by a different configuration or bitext; cannot resume")
            missing = set(_trainable_state(unwrapped)) ^ set(state["trainable"])
            if missing:
                raise ValueError(f"{latest}: trainable parameters differ: {sorted(missing)[:5]}")
            unwrapped.load_state_dict(state["trainable"], strict=False)
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            step, micro = state["step"], state["micro"]
            best_accuracy, bad_evals, best_state = state["best_accuracy"], state["bad_evals"], state["best_state"]
            history, stopped_early = list(state["history"]), state["stopped_early"]
            running, running_n = state["running"]
            _set_rng_state(torch.load(latest.with_name(f"{latest.stem}.rng{rank}.pt"), weights_only=False))
            resumed_from = step
            logger.info("resumed from %s (step %d of %d)", latest, step, total_steps)

    def checkpoint() -> None:
        _save_torch(_rng_state(), ckpt_dir / f"step-{step:07d}.rng{rank}.pt")
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            _save_torch({
                "config": config.to_dict(), "data_sha256": bitext_sha256(train_pairs), "step": step, "micro": micro,
                "trainable": _trainable_state(unwrapped), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "best_accuracy": best_accuracy, "bad_evals": bad_evals,
                "best_state": best_state, "history": history, "stopped_early": stopped_early,
                "running": (running, running_n),
            }, ckpt_dir / f"step-{step:07d}.pt")
            for old in sorted(ckpt_dir.glob("step-*.pt"))[: -_KEEP_CHECKPOINTS * (world + 1)]:
                old.unlink()
        accelerator.wait_for_everyone()

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    progress = Progress(TextColumn("[bold]distill {task.fields[method]}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=Console(stderr=True),
                        disable=not (show_progress and accelerator.is_main_process))
    task = progress.add_task("distill", total=total_steps, completed=step, method=config.method, info="")
    cached_epoch, batches = -1, []
    train_seconds, pairs_seen = 0.0, 0
    dev_metrics: dict[str, float] = {}
    with progress:
        while step < total_steps and not stopped_early:
            started = time.perf_counter()
            for k in range(config.grad_accumulation):
                epoch, index = divmod(micro, per_epoch)
                if epoch != cached_epoch:
                    batches = epoch_batches(train.lengths, config.batch_size, config.seed, epoch, config.bucket_window)
                    cached_epoch = epoch
                local = batches[index][rank * local_size : (rank + 1) * local_size]
                batch = train.batch(local)
                if teacher_cache is not None:
                    batch.teacher_outputs = teacher_cache.outputs(batch.target, [int(i) for i in local])
                sync = contextlib.nullcontext() if k == config.grad_accumulation - 1 else accelerator.no_sync(model)
                with sync:
                    with accelerator.autocast():
                        loss = loss_fn(model, teacher, batch)
                    accelerator.backward(loss / config.grad_accumulation)
                running += float(loss.detach())
                running_n += 1
                micro += 1
            if config.max_grad_norm:
                accelerator.clip_grad_norm_(params, config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            train_seconds += time.perf_counter() - started
            pairs_seen += config.batch_size * config.grad_accumulation
            progress.update(task, completed=step, info=f"loss {running / running_n:.4f}")

            last = step == total_steps
            if dev is not None and ((config.eval_every and step % config.eval_every == 0) or last):
                metrics = _evaluate(unwrapped, teacher, loss_fn, dev, config.batch_size)
                history.append({"step": step, "train_loss": running / running_n, **metrics})
                running, running_n = 0.0, 0
                progress.update(task, info=f"dev acc {metrics['dev_accuracy']:.3f} loss {metrics['dev_loss']:.4f}")
                logger.info("step %d: train loss %.4f, dev accuracy %.4f, dev loss %.4f", step,
                            history[-1]["train_loss"], metrics["dev_accuracy"], metrics["dev_loss"])
                if metrics["dev_accuracy"] > best_accuracy:
                    best_accuracy, bad_evals = metrics["dev_accuracy"], 0
                    best_state = _trainable_state(unwrapped) if config.patience else None
                else:
                    bad_evals += 1
                    if config.patience and bad_evals >= config.patience:
                        stopped_early = True
                        logger.info("early stop at step %d: no better dev accuracy in %d evaluations", step,
                                    bad_evals)
            if (config.checkpoint_every and step % config.checkpoint_every == 0) or last or stopped_early:
                checkpoint()
            if on_step is not None:
                on_step(step)

    unconverged = sum(getattr(part, "unconverged", 0) for part in loss_fn.modules())
    if unconverged:
        logger.warning("Sinkhorn hit ot_max_iter=%d before ot_tol in %d batches; the plans were used as they were",
                       config.loss.ot_max_iter, unconverged)
    if stopped_early and best_state is not None:
        unwrapped.load_state_dict(best_state, strict=False)
    if history:
        best = max(history, key=lambda h: h["dev_accuracy"]) if stopped_early else history[-1]
        dev_metrics = {"dev_accuracy": best["dev_accuracy"], "dev_loss": best["dev_loss"]}
    args = {
        "config": config.to_dict(),
        "loss": {"method": config.method, "class": type(loss_fn).__name__, **loss_fn.get_config_dict()},
        "data": {"train_pairs": len(train_pairs), "train_sha256": bitext_sha256(train_pairs),
                 "dev_pairs": len(dev_pairs), "dev_sha256": bitext_sha256(dev_pairs),
                 "languages": sorted({f"{p.source_lang}-{p.target_lang}" for p in train_pairs})},
        "steps": step, "processes": world, "dev_metrics": dev_metrics, "history": history,
        "stopped_early": stopped_early, "versions": _versions(),
    }
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        unwrapped.save(out_dir, extra={"training_args": TRAINING_ARGS, "method": config.method,
                                       "teacher": config.teacher})
        with atomic_write(out_dir / TRAINING_ARGS) as handle:
            handle.write(json.dumps(args, indent=2, ensure_ascii=False) + "\n")
    accelerator.wait_for_everyone()
    return DistillResult(
        student_dir=out_dir, training_args=out_dir / TRAINING_ARGS, checkpoint_dir=ckpt_dir, steps=step,
        resumed_from=resumed_from, pairs_seen=pairs_seen, seconds=train_seconds,
        pairs_per_second=pairs_seen / train_seconds if train_seconds else 0.0, dev_metrics=dev_metrics,
        history=tuple(history), stopped_early=stopped_early,
    )
