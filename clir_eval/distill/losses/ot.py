"""OPTICAL token alignment: optimal transport between the student's foreign tokens and the teacher's English
tokens (Huang, Yu & Allan 2023), on the batched Sinkhorn of :mod:`clir_eval.distill.sinkhorn`."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import nn

from clir_eval.distill.losses.base import DistillLoss, Encoded, LossResult, Needs
from clir_eval.distill.losses.options import LossOptions
from clir_eval.distill.sinkhorn import SinkhornResult, sinkhorn

# Diagnostic of :class:`OTLoss`: 1 when the batch's Sinkhorn stopped at max_iter before tol (the trainer warns).
SINKHORN_UNCONVERGED = "sinkhorn_unconverged"
# Statistics of :class:`OTLoss` (``LossResult.stats``): how sharp the batch's plans are (:func:`plan_sharpness`).
PLAN_ENTROPY = "ot_plan_entropy"
PLAN_ROW_MAX = "ot_plan_row_max"


class PlanSharpness(NamedTuple):
    """How sharp a batch of plans is, over its real rows (see :func:`plan_sharpness`)."""

    entropy: float
    row_max: float


def plan_sharpness(plan: torch.Tensor, mask_a: torch.Tensor, mask_b: torch.Tensor) -> PlanSharpness:
    """Mean normalised entropy and mean maximum of the row-normalised plans over the real rows of a batch.

    Each real row i of pair k is read as the distribution q = P_k[i, :] / sum_j P_k[i, j] over the m_k real columns
    (where token i sends its mass). ``entropy`` is the mean of H(q) / log m_k (0: every token sends all its mass to
    one token; 1: spread evenly over all, a diffuse plan; 0 when m_k = 1); ``row_max`` the mean of max_j q_j (1:
    sharp; 1 / m_k: uniform).

    Args:
        plan: ``(b, n, m)`` plans, zero at padding.
        mask_a, mask_b: ``(b, n)`` / ``(b, m)`` booleans, True for real rows / columns.
    """
    with torch.no_grad():
        plan = plan.detach().double().masked_fill(~(mask_a[:, :, None] & mask_b[:, None, :]), 0.0)
        rows = plan.sum(dim=2, keepdim=True)
        q = plan / rows.clamp_min(torch.finfo(torch.float64).tiny)
        entropy = -(q * torch.log(q.clamp_min(1e-300))).sum(dim=2)  # 0 log 0 = 0
        log_m = torch.log(mask_b.sum(dim=1).double()).clamp_min(1e-300)[:, None].expand_as(entropy)
        entropy = torch.where(mask_b.sum(dim=1, keepdim=True) > 1, entropy / log_m, torch.zeros_like(entropy))
        real = mask_a & (rows[..., 0] > 0)
        count = max(int(real.sum()), 1)
        return PlanSharpness(entropy=float(entropy[real].sum()) / count,
                             row_max=float(q.amax(dim=2)[real].sum()) / count)


def real_token_mask(outputs: dict[str, torch.Tensor], include_special: bool) -> torch.Tensor:
    """Boolean ``(b, L)`` of tokens that take part in the alignment.

    Padding never does; special tokens only if ``include_special``, or when a sentence has no
    other token (an empty sentence still needs something to transport).
    """
    mask = outputs["attention_mask"].bool()
    if include_special or "special_tokens_mask" not in outputs:
        return mask
    real = mask & ~outputs["special_tokens_mask"].bool()
    return torch.where(real.any(dim=1, keepdim=True), real, mask)


def cosine_cost(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``(b, n, m)`` cost 1 - cos(x_i, y_j) between ``(b, n, d)`` and ``(b, m, d)`` token states."""
    x = nn.functional.normalize(x, dim=-1)
    y = nn.functional.normalize(y.to(x.dtype), dim=-1)
    return 1.0 - torch.bmm(x, y.transpose(1, 2))


def sqeuclidean_cost(x: torch.Tensor, y: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``(b, n, m)`` cost ||x_i - y_j||^2 / scale between ``(b, n, d)`` and ``(b, m, d)`` token states.

    With this cost and uniform marginals, <P, C> bounds the squared distance of the mean-pooled embeddings from
    above (Jensen: mean(x) - mean(y) = sum_ij P_ij (x_i - y_j)), so OT pulls the pooled embedding along.
    """
    y = y.to(x.dtype)
    return torch.cdist(x, y).pow(2) / scale


# ``LossOptions.ot_cost`` name -> function of (student tokens, teacher tokens, teacher real-token mask)
# (the names are ``options.OT_COST_NAMES``).
OT_COSTS = {
    "cosine": lambda x, y, mask: cosine_cost(x, y),
    "sqeuclidean": lambda x, y, mask: sqeuclidean_cost(
        x, y, y.detach().pow(2).sum(-1)[mask].mean().clamp(min=1e-12)),
}


def pooled_share(tokens: torch.Tensor, mask: torch.Tensor, floor: float = 1e-3) -> torch.Tensor:
    """``(b, L)`` marginal: each real token's share max(<h_i, mean_j h_j>, 0) in its sentence's mean-pooled
    embedding, plus ``floor`` times the uniform weight, normalised to 1 per sentence; 0 at masked positions."""
    tokens = tokens.detach().float()
    weight = mask.float()
    mean = (tokens * weight[..., None]).sum(1) / weight.sum(1, keepdim=True).clamp(min=1.0)
    share = torch.einsum("bld,bd->bl", tokens, mean).clamp(min=0.0) * weight
    share = share / share.sum(1, keepdim=True).clamp(min=1e-12)
    uniform = weight / weight.sum(1, keepdim=True).clamp(min=1.0)
    mixed = share + floor * uniform
    return mixed / mixed.sum(1, keepdim=True)


def ot_from_cost(
    cost: torch.Tensor,
    mask_a: torch.Tensor,
    mask_b: torch.Tensor,
    *,
    epsilon: float,
    max_iter: int,
    tol: float,
    tau: float | None = None,
    a: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
    solver: str = "sinkhorn",
) -> tuple[torch.Tensor, SinkhornResult]:
    """OPTICAL token-alignment loss: mean over pairs of <P_k, C_k>, P_k the entropic plan held constant.

    P_k = Sinkhorn(C_k, marginals ``a``/``b`` (default uniform over real tokens), eps) (Cuturi 2013), so
    dL/dC_k = P_k / b
    (Huang et al. 2023, "Improving Cross-lingual Information Retrieval on Low-Resource Languages
    via Optimal Transport Distillation", WSDM). With ``solver="emd"`` P_k is the exact plan instead
    (:func:`clir_eval.distill.emd.emd`; ``epsilon``, ``tol`` and ``tau`` unused), again held constant.
    """
    if solver == "emd":
        from clir_eval.distill.emd import emd

        if tau is not None:
            raise ValueError("the exact plan (solver 'emd') is balanced: tau must be None")
        result = emd(cost, a, b, mask_a=mask_a, mask_b=mask_b)
    elif solver == "sinkhorn":
        result = sinkhorn(cost, a, b, epsilon=epsilon, mask_a=mask_a, mask_b=mask_b, tau=tau, max_iter=max_iter,
                          tol=tol, warn=False)
    else:
        raise ValueError(f"solver must be 'sinkhorn' or 'emd', got {solver!r}")
    return result.value.mean(), result


class OTLoss(DistillLoss):
    """OPTICAL: <P, C> with C a distance between student tokens of foreign and teacher tokens of English (1 - cos
    by default), P the entropic plan by Sinkhorn (or the exact plan, ``solver="emd"``).

    Its :class:`LossResult` carries the sharpness of the batch's plans as ``stats`` (:func:`plan_sharpness`).
    """

    name = "ot"
    citation = "Huang, Yu & Allan, WSDM 2023, arXiv:2301.12566"

    def __init__(
        self,
        epsilon: float = 0.05,
        max_iter: int = 100,
        tol: float = 1e-4,
        student_layer: int | None = None,
        teacher_layer: int | None = None,
        include_special: bool = False,
        tau: float | None = None,
        cost: str = "cosine",
        marginals: str = "uniform",
        solver: str = "sinkhorn",
    ) -> None:
        super().__init__()
        # Validation is LossOptions' (one place lists every option and its range).
        options = LossOptions(ot_epsilon=epsilon, ot_max_iter=max_iter, ot_tol=tol, ot_student_layer=student_layer,
                              ot_teacher_layer=teacher_layer, ot_include_special=include_special, ot_tau=tau,
                              ot_cost=cost, ot_marginals=marginals, ot_solver=solver)
        self.epsilon, self.max_iter, self.tol, self.tau = epsilon, max_iter, tol, options.ot_tau
        self.cost, self.marginals, self.solver = cost, marginals, solver
        self.student_layer, self.teacher_layer, self.include_special = student_layer, teacher_layer, include_special

    def needs(self) -> Needs:
        return Needs(student_layer=self.student_layer, teacher_layer=self.teacher_layer, teacher_tokens=True)

    def transport(self, encoded: Encoded) -> tuple[torch.Tensor, SinkhornResult]:
        """The batch's loss (mean <P, C>) and the solver's result behind it (plans, convergence)."""
        return self._transport(encoded, *self._masks(encoded))

    def _masks(self, encoded: Encoded) -> tuple[torch.Tensor, torch.Tensor]:
        return (real_token_mask(encoded.student, self.include_special),
                real_token_mask(encoded.teacher, self.include_special))

    def _transport(self, encoded: Encoded, mask_s: torch.Tensor,
                   mask_t: torch.Tensor) -> tuple[torch.Tensor, SinkhornResult]:
        s, t = encoded.student, encoded.teacher
        cost = OT_COSTS[self.cost](s["token_embeddings"], t["token_embeddings"], mask_t)
        a = b = None
        if self.marginals == "pooled":
            a, b = pooled_share(s["token_embeddings"], mask_s), pooled_share(t["token_embeddings"], mask_t)
        return ot_from_cost(cost, mask_s, mask_t, epsilon=self.epsilon, max_iter=self.max_iter, tol=self.tol,
                            tau=self.tau, a=a, b=b, solver=self.solver)

    def compute(self, encoded: Encoded) -> LossResult:
        mask_s, mask_t = self._masks(encoded)
        loss, result = self._transport(encoded, mask_s, mask_t)
        sharp = plan_sharpness(result.plan, mask_s, mask_t)
        diagnostics = {SINKHORN_UNCONVERGED: int(not result.converged)} if self.solver == "sinkhorn" else {}
        return LossResult({self.name: loss}, diagnostics,
                          stats={PLAN_ENTROPY: sharp.entropy, PLAN_ROW_MAX: sharp.row_max})

    def get_config_dict(self) -> dict[str, Any]:
        return {"epsilon": self.epsilon, "max_iter": self.max_iter, "tol": self.tol, "tau": self.tau,
                "cost": self.cost, "marginals": self.marginals, "solver": self.solver,
                "student_layer": self.student_layer, "teacher_layer": self.teacher_layer,
                "include_special": self.include_special}
