"""Batched log-domain Sinkhorn (clir_eval) vs a per-pair POT loop vs ``ot.solve_batch``, side by side.

Same problems (a padded batch of token-alignment costs 1 - cos, ragged lengths around 30), same
epsilon; every solver runs to a tolerance tight enough that its values agree with a float64
reference to 1e-4 relative (printed), then the best of ``--repeats`` wall times is compared.

    python benchmarks/bench_sinkhorn.py --threads 2

POT ``solve_batch`` has no masks: its problems are cut to equal size (the padded size) with
uniform marginals over all cells, so it solves a slightly easier (dense) version; it is timed
on the same tensor shapes.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def _costs(batch: int, mean_len: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    lengths_a = torch.randint(mean_len - 8, mean_len + 9, (batch,), generator=gen)
    lengths_b = torch.randint(mean_len - 8, mean_len + 9, (batch,), generator=gen)
    n, m = int(lengths_a.max()), int(lengths_b.max())
    x, y = torch.randn(batch, n, dim, generator=gen), torch.randn(batch, m, dim, generator=gen)
    y[:, : min(n, m)] += 1.5 * x[:, : min(n, m)]
    cost = 1 - torch.nn.functional.normalize(x, dim=-1) @ torch.nn.functional.normalize(y, dim=-1).transpose(1, 2)
    return cost, torch.arange(n)[None] < lengths_a[:, None], torch.arange(m)[None] < lengths_b[:, None]


def _best(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def main() -> None:
    import ot

    from clir_eval.distill.sinkhorn import sinkhorn

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=30)
    parser.add_argument("--epsilon", type=float, nargs="+", default=[0.1, 0.05])
    parser.add_argument("--seeds", type=int, default=3, help="independent batches; times are summed over them")
    parser.add_argument("--tol", type=float, default=1e-5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{args.seeds} batches of {args.batch} cost matrices, lengths {args.length}+-8, float32, tol {args.tol}, "
          f"{args.threads} threads", flush=True)
    for eps in args.epsilon:
        times = {"ours": 0.0, "loop": 0.0, "batch": 0.0}
        errors = {"ours": 0.0, "loop": 0.0, "batch": 0.0}
        for seed in range(args.seeds):
            cost, mask_a, mask_b = _costs(args.batch, args.length, 64, seed=seed)
            lengths = list(zip(mask_a.sum(1).tolist(), mask_b.sum(1).tolist()))
            dense = cost.masked_fill(~(mask_a[:, :, None] & mask_b[:, None, :]), 1.0)
            # float64 references (the solver is checked against POT in tests/test_distill_sinkhorn.py).
            ref = sinkhorn(cost.double(), epsilon=eps, mask_a=mask_a, mask_b=mask_b, max_iter=200_000, tol=1e-11,
                           warn=False).value.numpy()
            dense_ref = sinkhorn(dense.double(), epsilon=eps, max_iter=200_000, tol=1e-11, warn=False).value.numpy()

            def ours():
                return sinkhorn(cost, epsilon=eps, mask_a=mask_a, mask_b=mask_b, max_iter=50_000,
                                tol=args.tol).value.numpy()

            def pot_loop():
                out = []
                for k, (n, m) in enumerate(lengths):
                    c = cost[k, :n, :m].numpy()
                    plan = ot.sinkhorn(np.full(n, 1 / n, dtype=np.float32), np.full(m, 1 / m, dtype=np.float32), c,
                                       eps, method="sinkhorn_log", numItermax=50_000, stopThr=args.tol)
                    out.append(float((plan * c).sum()))
                return np.array(out)

            def pot_batch():
                return ot.solve_batch(dense, reg=eps, method="log_sinkhorn", max_iter=50_000, tol=args.tol,
                                      grad="detach").value_linear.numpy()

            for name, fn, reference in (("ours", ours, ref), ("loop", pot_loop, ref), ("batch", pot_batch, dense_ref)):
                seconds, value = _best(fn, 1)
                times[name] += seconds
                errors[name] = max(errors[name], float(np.max(np.abs(value - reference) / np.abs(reference))))
        print(f"eps={eps}: clir_eval batched {times['ours']:7.2f} s (max rel err {errors['ours']:.1e}) | "
              f"POT per-pair loop {times['loop']:7.2f} s ({errors['loop']:.1e}) | "
              f"POT solve_batch {times['batch']:7.2f} s ({errors['batch']:.1e}, dense problems)")
        print(f"    speed-up: {times['loop'] / times['ours']:.1f}x vs POT loop, "
              f"{times['batch'] / times['ours']:.1f}x vs solve_batch", flush=True)


if __name__ == "__main__":
    main()
