"""What every loss shares: the batch types, running the student and the frozen teacher, the ``DistillLoss`` base
class and the :class:`LossResult` a loss returns."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)

Features = dict[str, torch.Tensor]


@dataclass
class DistillBatch:
    """One batch of bitext, tokenised.

    Attributes:
        source: student features of the foreign sentences (from ``student.tokenize(..., "query")``).
        target: teacher features of the English sentences.
        student_target: student features of the English sentences (only for
            ``kd_english_through_student``).
        teacher_outputs: the teacher's outputs for ``target`` if already computed (e.g. cached);
            must hold the token states of the layer the loss needs.
        negatives: teacher embeddings of other pairs' English sides, ``(n, d)``, that contrastive losses add to
            the batch's own negatives (training only; see ``LossOptions.contrastive_negatives``).
        negative_mask: ``(batch, n)``, True where negative j is the English of row i's own pair again (a
            duplicate sentence elsewhere in the bitext), which must not count against it.
    """

    source: Features
    target: Features
    student_target: Features | None = None
    teacher_outputs: dict[str, torch.Tensor] | None = None
    negatives: torch.Tensor | None = None
    negative_mask: torch.Tensor | None = None


@dataclass(frozen=True)
class Needs:
    """What a loss needs computed: token-state layers, whether it reads the teacher's token states (not only
    its sentence embeddings), whether English goes through the student, and how many extra negatives it
    takes per training step (``DistillBatch.negatives``)."""

    student_layer: int | None = None
    teacher_layer: int | None = None
    student_target: bool = False
    teacher_tokens: bool = False
    negatives: int = 0


@dataclass
class Encoded:
    """Outputs of ``SentenceEncoder.forward`` for one batch (teacher ones without grad)."""

    student: dict[str, torch.Tensor]
    teacher: dict[str, torch.Tensor]
    student_target: dict[str, torch.Tensor] | None = None
    negatives: torch.Tensor | None = None
    negative_mask: torch.Tensor | None = None


@dataclass(frozen=True)
class LossResult:
    """What a loss computed on one batch: its named parts and its diagnostics.

    Attributes:
        parts: name -> scalar tensor, each part as it enters the loss (a single loss: its own value under its
            ``name``; a combined loss: each part times its weight), so the loss is their sum (:meth:`total`).
        diagnostics: name -> count over this batch, not part of the loss, that the trainer adds up and reports
            (e.g. ``sinkhorn_unconverged``: Sinkhorn stopped at ``ot_max_iter`` before ``ot_tol``).
        stats: name -> a statistic of this batch, not part of the loss, that the trainer averages over the batches
            between two evaluations and records (e.g. ``ot_plan_entropy``, ``ot_plan_row_max``: how sharp the OT
            plans are).
    """

    parts: dict[str, torch.Tensor]
    diagnostics: dict[str, int] = field(default_factory=dict)
    stats: dict[str, float] = field(default_factory=dict)

    def total(self) -> torch.Tensor:
        """The loss: the parts added in order (a single part is returned as it is)."""
        values = list(self.parts.values())
        total = values[0]
        for value in values[1:]:
            total = total + value
        return total


def teacher_outputs(teacher: nn.Module, features: Features, layer: int | None = None) -> dict[str, torch.Tensor]:
    """The frozen teacher's outputs, computed without autograd."""
    with torch.no_grad():
        return {k: v.detach() for k, v in teacher(features, output_layer=layer).items()}


def encode_batch(student: nn.Module, teacher: nn.Module, batch: DistillBatch, needs: Needs) -> Encoded:
    """Run the student (with grad) and, unless given, the teacher (without) on a batch."""
    teacher_out = batch.teacher_outputs
    if teacher_out is None:
        teacher_out = teacher_outputs(teacher, batch.target, needs.teacher_layer)
    student_out = student(batch.source, output_layer=needs.student_layer)
    if student_out["sentence_embedding"].shape[-1] != teacher_out["sentence_embedding"].shape[-1]:
        raise ValueError(
            f"student dimension {student_out['sentence_embedding'].shape[-1]} != teacher dimension "
            f"{teacher_out['sentence_embedding'].shape[-1]}; give the student a projection (match_dimensions)"
        )
    student_target = None
    if needs.student_target:
        if batch.student_target is None:
            raise ValueError("this loss needs batch.student_target (English through the student)")
        student_target = student(batch.student_target)
    return Encoded(student=student_out, teacher=teacher_out, student_target=student_target,
                   negatives=batch.negatives, negative_mask=batch.negative_mask)


def match_dimensions(student: nn.Module, teacher: nn.Module, seed: int = 0) -> bool:
    """Give the student a learned linear projection onto the teacher's dimension when they differ.

    Returns True when a projection was added (it is saved with the student).
    """
    if student.dim == teacher.dim:
        return False
    if student.projection is not None:
        raise ValueError(f"student projection outputs {student.dim} dimensions, the teacher has {teacher.dim}")
    student.add_projection(teacher.dim, seed=seed)
    logger.info("student hidden size %d != teacher %d: added a linear projection", student.hidden_size, teacher.dim)
    return True


class DistillLoss(nn.Module):
    """Base: ``forward(student, teacher, batch)`` encodes what :meth:`needs` says, then :meth:`compute`.

    :meth:`compute` returns the named parts (:class:`LossResult`) and keeps nothing on the module, so one loss
    serves training and dev evaluation alike; ``forward`` returns their sum.
    """

    name = ""
    citation = ""

    def needs(self) -> Needs:
        return Needs()

    def compute(self, encoded: Encoded) -> LossResult:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, student: nn.Module, teacher: nn.Module, batch: DistillBatch) -> torch.Tensor:
        return self.compute(encode_batch(student, teacher, batch, self.needs())).total()

    def get_config_dict(self) -> dict[str, Any]:
        return {}
