"""Batched log-domain Sinkhorn for entropic optimal transport over padded batches of cost matrices.

Solves, for every pair k of a batch at once (Cuturi 2013; log-domain form as in Peyré & Cuturi,
"Computational Optimal Transport", 2019, §4.4):

    P_k = argmin_{P >= 0, P 1 = a_k, P^T 1 = b_k}  <P, C_k> - eps * H(P),   H(P) = -sum P (log P - 1)

or, with ``tau`` set, the unbalanced problem whose marginal constraints are replaced by
``tau * KL(P 1 | a_k) + tau * KL(P^T 1 | b_k)`` with entropy taken relative to ``a_k (x) b_k``
(Chizat et al. 2016, "Scaling algorithms for unbalanced transport problems"; POT's
``ot.unbalanced.sinkhorn_unbalanced(..., reg_type="kl")``).

Hand-written rather than calling POT because POT's solvers take one problem at a time (a Python
loop per pair) or, in ``ot.solve_batch``, a dense batch without padding masks and with
convergence tested only every 10 iterations; ragged token sequences need both masks and an
exact early stop. POT stays the reference the tests compare against.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

logger = logging.getLogger(__name__)

# Scalings beyond this factor (or below its inverse) are folded into the log-potentials.
_ABSORB = 1e4


@dataclass(frozen=True)
class SinkhornResult:
    """Outcome of :func:`sinkhorn` for a batch of problems.

    Attributes:
        plan: ``(b, n, m)`` transport plans, detached from autograd, zero at padded rows/columns.
        value: ``(b,)`` transport cost ``<P, C>`` per pair (the linear term, without entropy),
            differentiable with respect to ``cost`` with the plan held constant (envelope
            theorem: the gradient is the plan).
        n_iter: iterations run (the same for the whole batch).
        marginal_error: the largest L1 marginal violation in the batch,
            ``max_k |P_k 1 - a_k|_1 + |P_k^T 1 - b_k|_1`` (for unbalanced problems the distance to
            the *reference* marginals, which the solution is not meant to meet).
        converged: whether the stopping tolerance was reached within ``max_iter``.
    """

    plan: torch.Tensor
    value: torch.Tensor
    n_iter: int
    marginal_error: float
    converged: bool


def _marginal(weights: torch.Tensor | None, mask: torch.Tensor, dtype: torch.dtype, name: str) -> torch.Tensor:
    if weights is None:
        uniform = mask.to(dtype)
        return uniform / uniform.sum(dim=1, keepdim=True).clamp(min=1.0)
    if weights.shape != mask.shape:
        raise ValueError(f"{name} has shape {tuple(weights.shape)}, expected {tuple(mask.shape)}")
    if bool((weights < 0).any()):
        raise ValueError(f"{name} must be non-negative")
    return weights.to(dtype).masked_fill(~mask, 0.0)


def sinkhorn(
    cost: torch.Tensor,
    a: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
    *,
    epsilon: float,
    mask_a: torch.Tensor | None = None,
    mask_b: torch.Tensor | None = None,
    tau: float | None = None,
    max_iter: int = 1000,
    tol: float = 1e-6,
    check_every: int = 5,
    warn: bool = True,
) -> SinkhornResult:
    """Entropic OT plans for a padded batch, all pairs updated by the same tensor ops per iteration.

    Args:
        cost: ``(b, n, m)`` cost matrices; entries at padded rows/columns are ignored (may be
            anything, even NaN).
        a, b: ``(b, n)`` / ``(b, m)`` non-negative marginals; ``None`` means uniform over the
            unmasked positions. Balanced problems need ``a`` and ``b`` of equal mass per pair.
        epsilon: entropic regularisation (> 0), in the units of the cost.
        mask_a, mask_b: ``(b, n)`` / ``(b, m)`` booleans, True for real positions (default: all
            positions, or where the given marginal is positive).
        tau: ``None`` for the balanced problem; a positive float relaxes both marginal
            constraints into ``tau * KL`` penalties (unbalanced OT).
        max_iter: iteration cap; a warning is logged when it is reached before ``tol``.
        tol: balanced: stop when the L1 row-marginal error of every pair is below ``tol`` (the
            column marginals are exact after each iteration); unbalanced: stop when the dual
            potentials move by less than ``tol`` (in cost units).
        check_every: test convergence (and scaling overflow) every this many iterations; each
            test is a host sync and costs about one iteration, so testing every few iterations
            is faster while stopping at most ``check_every - 1`` iterations late.
        warn: log a warning when ``tol`` is not reached (callers that solve many small problems
            per training step set False and count ``converged`` themselves).

    Computation is in float32, or float64 when ``cost`` is float64, with autocast disabled.
    """
    if cost.dim() != 3:
        raise ValueError(f"cost must have shape (batch, n, m), got {tuple(cost.shape)}")
    if not epsilon > 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon}")
    if tau is not None and not tau > 0:
        raise ValueError(f"tau must be > 0 or None (balanced), got {tau}")
    if max_iter < 1 or check_every < 1:
        raise ValueError("max_iter and check_every must be >= 1")
    batch, n, m = cost.shape
    device = cost.device
    dtype = torch.float64 if cost.dtype == torch.float64 else torch.float32

    with torch.no_grad(), torch.autocast(device_type=device.type, enabled=False):
        if mask_a is None:
            mask_a = a > 0 if a is not None else torch.ones(batch, n, dtype=torch.bool, device=device)
        if mask_b is None:
            mask_b = b > 0 if b is not None else torch.ones(batch, m, dtype=torch.bool, device=device)
        mask_a, mask_b = mask_a.to(device=device, dtype=torch.bool), mask_b.to(device=device, dtype=torch.bool)
        empty = (~mask_a.any(dim=1)) | (~mask_b.any(dim=1))
        if bool(empty.any()):
            raise ValueError(f"pairs {empty.nonzero().flatten().tolist()} have no unmasked row or column")
        a = _marginal(a, mask_a, dtype, "a").to(device)
        b = _marginal(b, mask_b, dtype, "b").to(device)
        log_a, log_b = torch.log(a), torch.log(b)  # -inf at padding: those rows/columns get no mass
        valid = mask_a[:, :, None] & mask_b[:, None, :]
        clean_cost = torch.where(valid, cost.detach().to(dtype), torch.zeros((), dtype=dtype, device=device))

        zero = torch.zeros((), dtype=dtype, device=device)
        neg_inf = torch.tensor(float("-inf"), dtype=dtype, device=device)
        if tau is None:
            # Subtracting a row and a column constant from C leaves the balanced plan unchanged
            # and keeps the potentials small, so float32 stays accurate down to eps = 1e-3.
            big = torch.finfo(dtype).max
            shifted = clean_cost - clean_cost.masked_fill(~valid, big).amin(dim=2, keepdim=True)
            shifted = shifted - shifted.masked_fill(~valid, big).amin(dim=1, keepdim=True)
            log_k = torch.where(valid, -shifted / epsilon, neg_inf)
            exponent = 1.0
        else:
            # Entropy relative to a (x) b, as POT's reg_type="kl".
            log_k = torch.where(valid, -clean_cost / epsilon + log_a[:, :, None] + log_b[:, None, :], neg_inf)
            exponent = tau / (tau + epsilon)

        # Log-stabilised scaling (Schmitzer 2019, "Stabilized sparse scaling algorithms for entropy
        # regularized transport problems"): the plan is K * s t^T with K = exp(log_k + f + g).
        # Iterations update the scalings s, t with multiply-and-sum (several times faster than a
        # log-sum-exp per iteration on CPU); whenever a scaling drifts past `_ABSORB` it is
        # absorbed into the log-potentials f, g by an exact log-domain step, so nothing over- or
        # underflows at small eps.
        def log_step(f: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            f = torch.where(mask_a, exponent * (log_a - torch.logsumexp(log_k + g[:, None, :], dim=2)), zero)
            g = torch.where(mask_b, exponent * (log_b - torch.logsumexp(log_k + f[:, :, None], dim=1)), zero)
            return f, g

        def absorb(f: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, ...]:
            f, g = log_step(f, g)
            kernel = torch.exp(log_k + f[:, :, None] + g[:, None, :])
            return f, g, kernel, mask_a.to(dtype), mask_b.to(dtype)

        f, g, kernel, s, t = absorb(torch.zeros_like(a), torch.zeros_like(b))
        tiny = torch.finfo(dtype).tiny
        converged = False
        n_iter = 1
        for n_iter in range(2, max_iter + 1):
            kt = (kernel * t[:, None, :]).sum(dim=2)
            check = n_iter % check_every == 0
            if tau is None:
                if check and float((s * kt - a).abs().sum(dim=1).max()) < tol:
                    # Row sums of the current plan come free with the product the update needs.
                    converged = True
                    n_iter -= 1
                    break
                s = a / kt.clamp_min(tiny)
                t = b / (kernel * s[:, :, None]).sum(dim=1).clamp_min(tiny)
            else:
                s_prev = s
                # f_new = exponent * (log a - LSE(log_k + g + log t)) expressed through K t.
                s = torch.exp(exponent * (log_a - torch.log(kt.clamp_min(tiny))) + (exponent - 1.0) * f)
                ks = (kernel * s[:, :, None]).sum(dim=1)
                t = torch.exp(exponent * (log_b - torch.log(ks.clamp_min(tiny))) + (exponent - 1.0) * g)
                if check:
                    moved = torch.where(mask_a, torch.log(s.clamp_min(tiny) / s_prev.clamp_min(tiny)), zero)
                    if float(moved.abs().amax()) * epsilon < tol:
                        converged = True
                        break
            if check or n_iter == max_iter:
                s_real, t_real = s.masked_fill(~mask_a, 1.0), t.masked_fill(~mask_b, 1.0)
                extreme = torch.stack([s_real.amax(), t_real.amax(), 1.0 / s_real.amin(), 1.0 / t_real.amin()]).amax()
                if not bool(torch.isfinite(extreme)):
                    # Overflow since the last check: roll back to the last absorbed potentials and
                    # continue from an exact log-domain step (as POT rolls back on NaN/inf).
                    f, g, kernel, s, t = absorb(f, g)
                elif float(extreme) > _ABSORB:
                    f = torch.where(mask_a, f + torch.log(s_real), zero)
                    g = torch.where(mask_b, g + torch.log(t_real), zero)
                    f, g, kernel, s, t = absorb(f, g)

        plan = kernel * s[:, :, None] * t[:, None, :]
        row_err = (plan.sum(dim=2) - a).abs().sum(dim=1)
        col_err = (plan.sum(dim=1) - b).abs().sum(dim=1)
        marginal_error = float((row_err + col_err).max())
        if not torch.isfinite(plan).all():
            raise FloatingPointError(
                f"Sinkhorn produced non-finite values (epsilon={epsilon}); check the cost for inf/NaN at real positions"
            )
    if not converged and warn:
        logger.warning(
            "Sinkhorn did not reach tol=%g in %d iterations (marginal error %.2e, epsilon=%g); "
            "raise max_iter or epsilon",
            tol, max_iter, marginal_error, epsilon,
        )
    # The value is the only differentiable output: <P, C> with P constant (envelope theorem).
    value = (plan.to(cost.dtype) * torch.where(valid, cost, torch.zeros((), dtype=cost.dtype, device=device))).sum(
        dim=(1, 2)
    )
    return SinkhornResult(plan=plan, value=value, n_iter=n_iter, marginal_error=marginal_error, converged=converged)
