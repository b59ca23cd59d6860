"""Batched log-domain Sinkhorn against POT, one problem at a time, on random and token-like costs."""

from __future__ import annotations

import numpy as np
import ot
import pytest
import torch

from clir_eval.distill.sinkhorn import sinkhorn


def _token_costs(seed: int, lengths_a: list[int], lengths_b: list[int], dim: int = 32) -> tuple[torch.Tensor, ...]:
    """Padded batch of 1 - cos between correlated 'token states' (the OT loss's cost), with masks."""
    gen = torch.Generator().manual_seed(seed)
    batch, n, m = len(lengths_a), max(lengths_a), max(lengths_b)
    x = torch.randn(batch, n, dim, generator=gen)
    y = torch.randn(batch, m, dim, generator=gen)
    y[:, : min(n, m)] += 2.0 * x[:, : min(n, m)]  # some tokens are translations of others
    cost = 1.0 - torch.nn.functional.normalize(x, dim=-1) @ torch.nn.functional.normalize(y, dim=-1).transpose(1, 2)
    mask_a = torch.arange(n)[None, :] < torch.tensor(lengths_a)[:, None]
    mask_b = torch.arange(m)[None, :] < torch.tensor(lengths_b)[:, None]
    cost = cost.masked_fill(~(mask_a[:, :, None] & mask_b[:, None, :]), float("nan"))  # padding must be ignored
    return cost, mask_a, mask_b


def _pot_value_and_plan(cost: np.ndarray, reg: float) -> tuple[float, np.ndarray]:
    n, m = cost.shape
    a, b = np.full(n, 1.0 / n), np.full(m, 1.0 / m)
    plan = ot.sinkhorn(a, b, cost, reg, method="sinkhorn_log", numItermax=200_000, stopThr=1e-13)
    return float((plan * cost).sum()), plan


@pytest.mark.parametrize("epsilon", [0.1, 0.02])
def test_random_costs_match_pot(epsilon):
    gen = torch.Generator().manual_seed(1)
    cost = torch.rand(6, 12, 9, generator=gen, dtype=torch.float64)
    result = sinkhorn(cost, epsilon=epsilon, max_iter=20_000, tol=1e-10)
    assert result.converged
    for k in range(cost.shape[0]):
        value, plan = _pot_value_and_plan(cost[k].numpy(), epsilon)
        assert abs(float(result.value[k]) - value) <= 1e-4 * abs(value)
        np.testing.assert_allclose(result.plan[k].numpy(), plan, atol=1e-7)
        if k == 0:  # ot.sinkhorn2 gives the same linear cost
            assert abs(float(ot.sinkhorn2(np.full(12, 1 / 12), np.full(9, 1 / 9), cost[k].numpy(), epsilon,
                                          method="sinkhorn_log", stopThr=1e-13, numItermax=200_000)) - value) < 1e-9


def test_padded_token_costs_match_pot_float32_small_epsilon():
    """Ragged lengths, NaN in padding, float32, eps = 1e-3: value to 1e-4 relative, marginals to 1e-5."""
    lengths_a, lengths_b = [7, 12, 3, 10], [9, 5, 11, 10]
    cost, mask_a, mask_b = _token_costs(0, lengths_a, lengths_b)
    epsilon = 1e-3
    result = sinkhorn(cost.float(), epsilon=epsilon, mask_a=mask_a, mask_b=mask_b, max_iter=50_000, tol=1e-6)
    assert result.plan.dtype == torch.float32
    assert torch.isfinite(result.plan).all()
    for k, (n, m) in enumerate(zip(lengths_a, lengths_b)):
        sub = cost[k, :n, :m].double().numpy()
        value, _ = _pot_value_and_plan(sub, epsilon)
        assert abs(float(result.value[k]) - value) <= 1e-4 * abs(value), (k, float(result.value[k]), value)
        plan = result.plan[k]
        assert float(plan[n:].abs().sum() + plan[:, m:].abs().sum()) == 0.0  # nothing on padding
        np.testing.assert_allclose(plan[:n, :m].sum(1).numpy(), np.full(n, 1 / n), atol=1e-5)
        np.testing.assert_allclose(plan[:n, :m].sum(0).numpy(), np.full(m, 1 / m), atol=1e-5)


def test_given_marginals_and_ot_solve():
    gen = torch.Generator().manual_seed(3)
    cost = torch.rand(3, 8, 6, generator=gen, dtype=torch.float64)
    a = torch.rand(3, 8, generator=gen, dtype=torch.float64) + 0.1
    b = torch.rand(3, 6, generator=gen, dtype=torch.float64) + 0.1
    a, b = a / a.sum(1, keepdim=True), b / b.sum(1, keepdim=True)
    result = sinkhorn(cost, a, b, epsilon=0.05, max_iter=20_000, tol=1e-11)
    for k in range(3):
        ref = ot.solve(cost[k].numpy(), a[k].numpy(), b[k].numpy(), reg=0.05, method="sinkhorn_log",
                       max_iter=200_000, tol=1e-13)
        np.testing.assert_allclose(result.plan[k].numpy(), ref.plan, atol=1e-8)
        assert abs(float(result.value[k]) - float(ref.value_linear)) <= 1e-4 * float(ref.value_linear)


def test_unbalanced_matches_pot():
    gen = torch.Generator().manual_seed(4)
    cost = torch.rand(2, 7, 5, generator=gen, dtype=torch.float64)
    result = sinkhorn(cost, epsilon=0.05, tau=0.5, max_iter=50_000, tol=1e-12)
    assert result.converged
    for k in range(2):
        plan = ot.unbalanced.sinkhorn_unbalanced(np.full(7, 1 / 7), np.full(5, 1 / 5), cost[k].numpy(), 0.05, 0.5,
                                                 reg_type="kl", numItermax=200_000, stopThr=1e-14)
        np.testing.assert_allclose(result.plan[k].numpy(), plan, atol=1e-8)
        assert plan.sum() < 1.0  # relaxed marginals: the plan does not carry all the mass


def test_value_gradient_is_plan():
    cost = torch.rand(2, 5, 4, dtype=torch.float64, requires_grad=True)
    result = sinkhorn(cost, epsilon=0.1, tol=1e-12, max_iter=10_000)
    result.value.sum().backward()
    torch.testing.assert_close(cost.grad, result.plan)
    assert not result.plan.requires_grad


def test_nonconvergence_warns_and_bad_input_raises(caplog):
    cost = torch.rand(1, 6, 6)
    with caplog.at_level("WARNING", logger="clir_eval.distill.sinkhorn"):
        result = sinkhorn(cost, epsilon=1e-3, max_iter=3, tol=1e-9)
    assert not result.converged and "did not reach" in caplog.text
    with pytest.raises(ValueError, match="epsilon"):
        sinkhorn(cost, epsilon=0.0)
    with pytest.raises(ValueError, match="no unmasked"):
        sinkhorn(cost, epsilon=0.1, mask_a=torch.zeros(1, 6, dtype=torch.bool))
    with pytest.raises(ValueError, match="shape"):
        sinkhorn(cost[0], epsilon=0.1)


@pytest.mark.parametrize("epsilon", [0.01, 0.005])
def test_sharp_plans_at_the_loss_cost_scale_match_pot(epsilon):
    """eps 0.01 and 0.005 on costs in [0, 2] (the loss's 1 - cos scale): plans and values as POT's log-domain
    solver to 1e-4, in float64 and in float32 (the training dtype)."""
    gen = torch.Generator().manual_seed(5)
    cost = 2.0 * torch.rand(4, 11, 8, generator=gen, dtype=torch.float64)
    a = torch.rand(4, 11, generator=gen, dtype=torch.float64) + 0.1
    b = torch.rand(4, 8, generator=gen, dtype=torch.float64) + 0.1
    a, b = a / a.sum(1, keepdim=True), b / b.sum(1, keepdim=True)
    for dtype in (torch.float64, torch.float32):
        result = sinkhorn(cost.to(dtype), a.to(dtype), b.to(dtype), epsilon=epsilon, max_iter=50_000,
                          tol=1e-10 if dtype == torch.float64 else 1e-6)
        assert result.converged and torch.isfinite(result.plan).all()
        for k in range(cost.shape[0]):
            ref = ot.solve(cost[k].numpy(), a[k].numpy(), b[k].numpy(), reg=epsilon, method="sinkhorn_log",
                           max_iter=500_000, tol=1e-13)
            value = float(ref.value_linear)
            assert abs(float(result.value[k]) - value) <= 1e-4 * value, (dtype, k, float(result.value[k]), value)
            np.testing.assert_allclose(result.plan[k].double().numpy(), ref.plan, atol=1e-4 if dtype == torch.float32
                                       else 1e-8)
    uniform = sinkhorn(cost[:1], epsilon=epsilon, max_iter=50_000, tol=1e-11)
    reference = ot.sinkhorn2(np.full(11, 1 / 11), np.full(8, 1 / 8), cost[0].numpy(), epsilon, method="sinkhorn_log",
                             stopThr=1e-13, numItermax=500_000)
    assert abs(float(uniform.value[0]) - float(reference)) <= 1e-4 * float(reference)


def test_sharp_plans_need_more_iterations_than_the_loss_default_and_warn_without_them(caplog):
    """On token-like costs (lengths up to 64, float32) eps 0.005 does not reach ot_tol = 1e-4 in the default
    ot_max_iter = 100: the plan stays finite and the solver warns; 3,000 iterations reach it."""
    cost, mask_a, mask_b = _token_costs(0, [20, 33, 48, 64], [22, 30, 50, 64], dim=64)
    with caplog.at_level("WARNING", logger="clir_eval.distill.sinkhorn"):
        short = sinkhorn(cost.float(), epsilon=0.005, mask_a=mask_a, mask_b=mask_b, max_iter=100, tol=1e-4)
    assert not short.converged and torch.isfinite(short.plan).all() and "epsilon=0.005" in caplog.text
    long = sinkhorn(cost.float(), epsilon=0.005, mask_a=mask_a, mask_b=mask_b, max_iter=3000, tol=1e-4)
    assert long.converged and long.marginal_error < 1e-4 and torch.isfinite(long.plan).all()
