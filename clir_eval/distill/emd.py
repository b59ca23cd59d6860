"""Exact (unregularised) optimal transport plans for a padded batch of cost matrices, one pair at a time.

Solves, for every pair k (Kantorovich's problem; network simplex of Bonneel et al. 2011 through POT's ``ot.emd``
with its torch backend):

    P_k = argmin_{P >= 0, P 1 = a_k, P^T 1 = b_k}  <P, C_k>

The comparison point for :func:`clir_eval.distill.sinkhorn.sinkhorn`, whose entropic plans approach P_k as epsilon
shrinks. Unbatched on purpose: POT's network simplex takes one problem at a time and runs on the CPU.
"""

from __future__ import annotations

import logging
import warnings

import torch

from clir_eval.distill.sinkhorn import SinkhornResult

logger = logging.getLogger(__name__)


def emd(
    cost: torch.Tensor,
    a: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
    *,
    mask_a: torch.Tensor | None = None,
    mask_b: torch.Tensor | None = None,
    max_iter: int = 100_000,
) -> SinkhornResult:
    """Exact OT plans of a padded batch, in the result type of :func:`~clir_eval.distill.sinkhorn.sinkhorn`.

    Args:
        cost: ``(b, n, m)`` cost matrices; entries at padded rows/columns are ignored (may be NaN).
        a, b: ``(b, n)`` / ``(b, m)`` non-negative marginals (``None``: uniform over the unmasked positions); each
            pair's two marginals are rescaled to mass 1, as the balanced problem needs equal masses.
        mask_a, mask_b: ``(b, n)`` / ``(b, m)`` booleans, True for real positions (default: all positions, or
            where the given marginal is positive).
        max_iter: network-simplex iteration cap per pair (POT's ``numItermax``).

    Returns:
        A :class:`SinkhornResult`: ``plan`` ``(b, n, m)`` (solved in float64, returned in the cost's float dtype,
        detached, zero at padding), ``value`` ``<P, C>`` per pair, differentiable with respect to ``cost`` with
        the plan held constant (its gradient is the plan: the envelope theorem), ``n_iter`` 0 (POT does not
        report it), ``marginal_error`` as for Sinkhorn, and ``converged`` False when any pair stopped at
        ``max_iter`` (POT's result code is not 1; a warning is logged).
    """
    import ot

    if cost.dim() != 3:
        raise ValueError(f"cost must have shape (batch, n, m), got {tuple(cost.shape)}")
    batch, n, m = cost.shape
    device = cost.device
    if mask_a is None:
        mask_a = a > 0 if a is not None else torch.ones(batch, n, dtype=torch.bool, device=device)
    if mask_b is None:
        mask_b = b > 0 if b is not None else torch.ones(batch, m, dtype=torch.bool, device=device)
    plan = torch.zeros(batch, n, m, dtype=torch.float64, device=device)
    marginal_error, failed = 0.0, []
    with torch.no_grad():
        for k in range(batch):
            rows, cols = mask_a[k].nonzero().flatten(), mask_b[k].nonzero().flatten()
            if len(rows) == 0 or len(cols) == 0:
                raise ValueError(f"pair {k} has no unmasked row or column")
            sub = cost[k].detach().to(torch.float64)[rows][:, cols]
            a_k = torch.full((len(rows),), 1.0 / len(rows), dtype=torch.float64, device=device) if a is None \
                else a[k, rows].detach().to(torch.float64)
            b_k = torch.full((len(cols),), 1.0 / len(cols), dtype=torch.float64, device=device) if b is None \
                else b[k, cols].detach().to(torch.float64)
            if bool((a_k < 0).any()) or bool((b_k < 0).any()):
                raise ValueError(f"pair {k}: marginals must be non-negative")
            # float32 marginals summed to 1 differ in the 7th digit, which ot.emd refuses.
            a_k, b_k = a_k / a_k.sum(), b_k / b_k.sum()
            with warnings.catch_warnings():  # POT's own warning; the cap is logged once below
                warnings.filterwarnings("ignore", message="numItermax reached", category=UserWarning)
                p_k, log = ot.emd(a_k, b_k, sub, numItermax=max_iter, log=True)
            if log["result_code"] != 1:
                failed.append(k)
            plan[k, rows[:, None], cols[None, :]] = p_k
            error = float((p_k.sum(1) - a_k).abs().sum() + (p_k.sum(0) - b_k).abs().sum())
            marginal_error = max(marginal_error, error)
    if failed:
        logger.warning("exact OT stopped at max_iter=%d before the optimum for pairs %s", max_iter, failed)
    dtype = cost.dtype if cost.dtype.is_floating_point else torch.float32
    plan = plan.to(dtype)
    valid = mask_a[:, :, None] & mask_b[:, None, :]
    value = (plan * torch.where(valid, cost, torch.zeros((), dtype=cost.dtype, device=device))).sum(dim=(1, 2))
    return SinkhornResult(plan=plan, value=value, n_iter=0, marginal_error=marginal_error, converged=not failed)
