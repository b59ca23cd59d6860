"""Distillation losses: a student encoder of foreign text learns the teacher's space of the English side.

One loss per module, called as ``loss(student, teacher, batch) -> scalar`` (sentence-transformers
style: the module validates its options in ``__init__``; the math sits in pure functions over
tensors, tested without a model). ``loss.compute(encoded)`` returns the named parts and diagnostics
(:class:`LossResult`) that the trainer sums and logs. The teacher is frozen: its outputs are computed
under ``no_grad`` or passed in precomputed (``DistillBatch.teacher_outputs``).

* ``options``: :class:`LossOptions`, every loss's options, validated in one place;
* ``base``: the batch types, :func:`encode_batch`, :func:`match_dimensions`, :class:`DistillLoss`,
  :class:`LossResult`;
* ``kd``, ``ot``, ``contrastive``: one loss each, with its pure math; ``combined``: their weighted sum.

Methods (``build_loss``, the registry below): ``kd``, ``ot``, ``contrastive``, ``kd+ot``, ``kd+contrastive``,
``kd+ot+contrastive``.
"""

from __future__ import annotations

from typing import Callable

from clir_eval.distill.losses.base import (
    DistillBatch,
    DistillLoss,
    Encoded,
    Features,
    LossResult,
    Needs,
    encode_batch,
    match_dimensions,
    teacher_outputs,
)
from clir_eval.distill.losses.combined import CombinedLoss
from clir_eval.distill.losses.contrastive import ContrastiveLoss, gather_batch_negatives, info_nce_from_embeddings
from clir_eval.distill.losses.kd import KD_DISTANCE_FUNCTIONS, KDLoss, kd_cosine_from_embeddings, kd_from_embeddings
from clir_eval.distill.losses.options import KD_DISTANCES, OT_COST_NAMES, OT_MARGINALS, OT_SOLVERS, LossOptions
from clir_eval.distill.losses.ot import (
    OT_COSTS,
    PLAN_ENTROPY,
    PLAN_ROW_MAX,
    SINKHORN_UNCONVERGED,
    OTLoss,
    PlanSharpness,
    cosine_cost,
    ot_from_cost,
    plan_sharpness,
    pooled_share,
    real_token_mask,
    sqeuclidean_cost,
)

__all__ = [
    "KD_DISTANCES", "KD_DISTANCE_FUNCTIONS", "LOSS_METHODS", "LOSS_PARTS", "OT_COSTS", "OT_COST_NAMES",
    "OT_MARGINALS", "OT_SOLVERS", "PLAN_ENTROPY", "PLAN_ROW_MAX", "SINKHORN_UNCONVERGED", "CombinedLoss",
    "ContrastiveLoss", "DistillBatch", "DistillLoss", "Encoded", "Features", "KDLoss", "LossOptions", "LossResult",
    "Needs", "OTLoss", "PlanSharpness", "build_loss", "cosine_cost", "encode_batch", "gather_batch_negatives",
    "info_nce_from_embeddings", "kd_cosine_from_embeddings", "kd_from_embeddings", "match_dimensions",
    "ot_from_cost", "plan_sharpness", "pooled_share", "real_token_mask", "sqeuclidean_cost", "teacher_outputs",
]


def _kd(options: LossOptions) -> DistillLoss:
    return KDLoss(english_through_student=options.kd_english_through_student, distance=options.kd_distance)


def _ot(options: LossOptions) -> DistillLoss:
    return OTLoss(epsilon=options.ot_epsilon, max_iter=options.ot_max_iter, tol=options.ot_tol,
                  student_layer=options.ot_student_layer, teacher_layer=options.ot_teacher_layer,
                  include_special=options.ot_include_special, tau=options.ot_tau, cost=options.ot_cost,
                  marginals=options.ot_marginals, solver=options.ot_solver)


def _contrastive(options: LossOptions) -> DistillLoss:
    return ContrastiveLoss(temperature=options.contrastive_temperature, negatives=options.contrastive_negatives,
                           english_through_student=options.contrastive_english_through_student)


# Part name -> (builder, name of its weight option).
LOSS_PARTS: dict[str, tuple[Callable[[LossOptions], DistillLoss], str]] = {
    "kd": (_kd, "kd_weight"), "ot": (_ot, "ot_weight"), "contrastive": (_contrastive, "contrastive_weight")}
# Method name -> its parts; a single part is used unweighted.
LOSS_METHODS: dict[str, tuple[str, ...]] = {
    "kd": ("kd",),
    "ot": ("ot",),
    "contrastive": ("contrastive",),
    "kd+ot": ("kd", "ot"),
    "kd+contrastive": ("kd", "contrastive"),
    # OT on top of the one method that beats its start on lafand-x (docs/journal/lafand-x-dev.md): OT's contrast there
    "kd+ot+contrastive": ("kd", "ot", "contrastive"),
}


def build_loss(method: str, options: LossOptions | None = None) -> DistillLoss:
    """The loss of a method name (see ``LOSS_METHODS``); unknown names raise listing the valid ones."""
    if method not in LOSS_METHODS:
        raise ValueError(f"unknown distillation method {method!r}; valid methods are {list(LOSS_METHODS)}")
    options = options or LossOptions()
    parts = LOSS_METHODS[method]
    if len(parts) == 1:
        return LOSS_PARTS[parts[0]][0](options)
    return CombinedLoss([(LOSS_PARTS[p][0](options), getattr(options, LOSS_PARTS[p][1])) for p in parts])
