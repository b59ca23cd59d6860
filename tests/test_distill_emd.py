"""Exact OT plans (ot_solver: emd) against POT, against the entropic plans, and through the OT loss."""

from __future__ import annotations

import logging

import numpy as np
import ot
import pytest
import torch

from clir_eval.distill.emd import emd
from clir_eval.distill.losses import LossOptions, OTLoss, build_loss, ot_from_cost
from clir_eval.distill.sinkhorn import sinkhorn


def _problems(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Padded batch of random costs in [0, 2] with ragged lengths (NaN on padding) and their masks."""
    gen = torch.Generator().manual_seed(seed)
    lengths_a, lengths_b = [6, 9, 4], [7, 5, 9]
    cost = 2.0 * torch.rand(3, 9, 9, generator=gen, dtype=torch.float64)
    mask_a = torch.arange(9)[None, :] < torch.tensor(lengths_a)[:, None]
    mask_b = torch.arange(9)[None, :] < torch.tensor(lengths_b)[:, None]
    return cost.masked_fill(~(mask_a[:, :, None] & mask_b[:, None, :]), float("nan")), mask_a, mask_b


def test_exact_plans_are_couplings_below_every_entropic_plan_which_approach_them():
    cost, mask_a, mask_b = _problems()
    exact = emd(cost, mask_a=mask_a, mask_b=mask_b)
    assert exact.converged and exact.marginal_error < 1e-6
    values = {}
    for epsilon in (0.5, 0.1, 0.02):
        result = sinkhorn(cost, epsilon=epsilon, mask_a=mask_a, mask_b=mask_b, max_iter=50_000, tol=1e-12)
        assert result.converged
        values[epsilon] = result.value
    for k in range(3):
        n, m = int(mask_a[k].sum()), int(mask_b[k].sum())
        plan = exact.plan[k]
        assert float(plan[n:].abs().sum() + plan[:, m:].abs().sum()) == 0.0  # nothing on padding
        np.testing.assert_allclose(plan[:n, :m].sum(1).numpy(), np.full(n, 1 / n), atol=1e-6)
        np.testing.assert_allclose(plan[:n, :m].sum(0).numpy(), np.full(m, 1 / m), atol=1e-6)
        assert bool((plan >= 0).all())
        reference = ot.emd2(np.full(n, 1 / n), np.full(m, 1 / m), cost[k, :n, :m].numpy())
        assert abs(float(exact.value[k]) - reference) < 1e-12
        # The exact plan's cost is the least; the entropic ones come down to it as epsilon shrinks.
        linear = [float(values[e][k]) for e in (0.5, 0.1, 0.02)]
        assert float(exact.value[k]) <= min(linear) + 1e-12
        assert linear[0] > linear[1] > linear[2]
        assert linear[2] - float(exact.value[k]) < 0.1 * (linear[0] - float(exact.value[k]))


def test_exact_value_gradient_is_the_plan_and_given_marginals_are_met():
    gen = torch.Generator().manual_seed(2)
    cost = torch.rand(2, 5, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    result = emd(cost)
    result.value.sum().backward()
    torch.testing.assert_close(cost.grad, result.plan)  # envelope theorem: the plan held constant
    assert not result.plan.requires_grad
    # float32 marginals (as pooled_share gives) of slightly unequal mass are rescaled, not refused.
    a = torch.rand(2, 5, generator=gen) + 0.1
    b = torch.rand(2, 4, generator=gen) + 0.1
    a, b = a / a.sum(1, keepdim=True), b / b.sum(1, keepdim=True)
    weighted = emd(cost.detach().float(), a, b)
    assert weighted.plan.dtype == torch.float32 and weighted.marginal_error < 1e-6
    for k in range(2):
        a_k, b_k = a[k].double(), b[k].double()
        ref = ot.emd((a_k / a_k.sum()).numpy(), (b_k / b_k.sum()).numpy(), cost[k].detach().numpy())
        np.testing.assert_allclose(weighted.plan[k].numpy(), ref, atol=1e-6)


def test_emd_stopped_at_its_iteration_cap_warns(caplog):
    cost = torch.rand(1, 30, 30, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with caplog.at_level(logging.WARNING, logger="clir_eval.distill.emd"):
        result = emd(cost, max_iter=3)
    assert not result.converged and "max_iter=3" in caplog.text


def test_the_ot_loss_with_the_exact_solver():
    cost, mask_a, mask_b = _problems(1)
    cost = cost.clone().requires_grad_(True)
    loss, result = ot_from_cost(cost, mask_a, mask_b, epsilon=0.05, max_iter=100, tol=1e-4, solver="emd")
    loss.backward()
    torch.testing.assert_close(torch.nan_to_num(cost.grad) * 3, result.plan)  # mean over 3 pairs
    assert torch.equal(result.value, emd(cost.detach(), mask_a=mask_a, mask_b=mask_b).value)
    loss_fn = build_loss("kd+ot", LossOptions(ot_solver="emd"))
    assert loss_fn.get_config_dict()["ot"]["solver"] == "emd"
    assert OTLoss().get_config_dict()["solver"] == "sinkhorn"


@pytest.mark.parametrize(("options", "message"), [
    ({"ot_solver": "exact"}, r"ot_solver must be one of \['sinkhorn', 'emd'\], got 'exact'"),
    ({"ot_solver": "emd", "ot_tau": 1.0}, r"ot_solver 'emd' solves the balanced problem: ot_tau must be None"),
])
def test_the_solver_option_is_validated(options, message):
    with pytest.raises(ValueError, match=message):
        LossOptions(**options)
    with pytest.raises(ValueError, match=message):
        OTLoss(solver=options["ot_solver"], tau=options.get("ot_tau"))
