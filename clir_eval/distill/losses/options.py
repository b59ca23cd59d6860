"""The options of every distillation loss, validated in one place (each loss reads its own prefix)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

# The names each option accepts; the functions behind them are ``kd.KD_DISTANCE_FUNCTIONS`` and ``ot.OT_COSTS``
# (their keys are tested to match), kept apart so that the losses can validate through ``LossOptions``.
KD_DISTANCES = ("mse", "cosine")
OT_COST_NAMES = ("cosine", "sqeuclidean")
OT_MARGINALS = ("uniform", "pooled")
OT_SOLVERS = ("sinkhorn", "emd")


@dataclass(frozen=True)
class LossOptions:
    """Options of every loss (each loss reads its own prefix); weights apply in combined methods.

    Attributes:
        kd_english_through_student: KD also pulls student(English) onto teacher(English)
            (sentence-transformers' multilingual recipe, Reimers & Gurevych 2020).
        kd_distance: ``mse`` (Reimers & Gurevych's regression of the whole vector) or ``cosine`` (1 - cos: only
            the direction, which is all an inner-product search reads of a query vector; its gradient is
            about d/2 times MSE's, so it weighs like the OT and InfoNCE terms in a combined loss).
        ot_epsilon: entropic regularisation of the token-alignment Sinkhorn (cost 1 - cos in [0, 2]).
        ot_max_iter, ot_tol: Sinkhorn iteration cap and L1 marginal tolerance.
        ot_student_layer, ot_teacher_layer: hidden-state index whose token states are aligned
            (0 = embeddings; None = last layer).
        ot_include_special: let [CLS]/[SEP]/<s>/</s> take part in the alignment.
        ot_tau: None for balanced OT; a positive float relaxes the marginals into tau * KL terms.
        ot_cost: ``cosine`` (1 - cos, in [0, 2]) or ``sqeuclidean`` (squared distance divided by the batch's
            mean squared norm of the teacher's token states, so that epsilon keeps its scale).
        ot_marginals: ``uniform`` over the real tokens, or ``pooled``: each token weighted by its share in its
            sentence's mean-pooled embedding, max(<h_i, mean_j h_j>, 0) (plus a small floor), so that tokens
            the pooled embedding hardly reads carry little mass.
        ot_solver: ``sinkhorn`` (the entropic plan, ``ot_epsilon``) or ``emd``: the exact plan of the balanced
            problem (POT's ``ot.emd``, one pair at a time, on the CPU; ``ot_epsilon``, ``ot_max_iter`` and
            ``ot_tol`` are unused), for comparison with the entropic plans.
        contrastive_temperature: InfoNCE temperature.
        contrastive_negatives: negatives added to the batch's own at each training step: the frozen teacher's
            embeddings of the English sides of that many other training pairs, drawn at random (0: the batch's
            negatives only). The teacher is frozen: its English sides are embedded once before training, and
            each step then costs one small product more.
        contrastive_english_through_student: InfoNCE also ranks student(English) against the same candidates
            as student(foreign), so the student learns the teacher's space on the English it is given too (the
            contrastive counterpart of ``kd_english_through_student``; the English goes through the student once
            when both are on).
    """

    kd_weight: float = 1.0
    kd_english_through_student: bool = False
    kd_distance: str = "mse"
    ot_weight: float = 1.0
    ot_epsilon: float = 0.05
    ot_max_iter: int = 100
    ot_tol: float = 1e-4
    ot_student_layer: int | None = None
    ot_teacher_layer: int | None = None
    ot_include_special: bool = False
    ot_tau: float | None = None
    ot_cost: str = "cosine"
    ot_marginals: str = "uniform"
    ot_solver: str = "sinkhorn"
    contrastive_weight: float = 1.0
    contrastive_temperature: float = 0.05
    contrastive_negatives: int = 0
    contrastive_english_through_student: bool = False

    def __post_init__(self) -> None:
        for name in ("kd_weight", "ot_weight", "contrastive_weight"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.ot_epsilon > 0:
            raise ValueError(f"ot_epsilon must be > 0, got {self.ot_epsilon}")
        if self.ot_max_iter < 1 or not self.ot_tol > 0:
            raise ValueError("ot_max_iter must be >= 1 and ot_tol > 0")
        if self.ot_tau is not None and not self.ot_tau > 0:
            raise ValueError(f"ot_tau must be > 0 or None (balanced), got {self.ot_tau}")
        for name in ("ot_student_layer", "ot_teacher_layer"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0 or None (last layer), got {value}")
        if self.kd_distance not in KD_DISTANCES:
            raise ValueError(f"kd_distance must be one of {list(KD_DISTANCES)}, got {self.kd_distance!r}")
        if self.ot_cost not in OT_COST_NAMES:
            raise ValueError(f"ot_cost must be one of {list(OT_COST_NAMES)}, got {self.ot_cost!r}")
        if self.ot_marginals not in OT_MARGINALS:
            raise ValueError(f"ot_marginals must be one of {list(OT_MARGINALS)}, got {self.ot_marginals!r}")
        if self.ot_solver not in OT_SOLVERS:
            raise ValueError(f"ot_solver must be one of {list(OT_SOLVERS)}, got {self.ot_solver!r}")
        if self.ot_solver == "emd" and self.ot_tau is not None:
            raise ValueError(f"ot_solver 'emd' solves the balanced problem: ot_tau must be None, got {self.ot_tau}")
        if not self.contrastive_temperature > 0:
            raise ValueError(f"contrastive_temperature must be > 0, got {self.contrastive_temperature}")
        if isinstance(self.contrastive_negatives, bool) or not isinstance(self.contrastive_negatives, int) \
                or self.contrastive_negatives < 0:
            raise ValueError(f"contrastive_negatives must be an integer >= 0, got {self.contrastive_negatives!r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LossOptions":
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"unknown loss option(s) {unknown}; valid options are {known}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
