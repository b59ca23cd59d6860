"""How near the matmul peak a training step can come: the step's own matrix products, replayed alone.

    python benchmarks/bench_step_matmuls.py [--threads 2] [--steps 6] [--freeze-layers 0]

``bench_distill.py`` puts the trainer's ceiling at a KD step's FLOPs over the rate of one favourable GEMM (the
feed-forward layer's shape, 2048 x 384 x 1536). A real step's products have other shapes: the batch's own padded
lengths, weight gradients (a transposed operand and the tokens as inner dimension), attention's small batched
products. This records every product a real KD step dispatches (student forward and backward, teacher forward),
replays them alone on tensors of the same shapes, strides and dtypes, and prints side by side in one run: the
step's time, its products' time, their rate, and the feed-forward GEMM's rate. A step that did nothing but its
products, at the rate they run here, is the fastest any schedule of this model's step can be on this machine.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class TensorSpec:
    """What a replayed product needs of a tensor it read (a leaf for torch's pytree, unlike a tuple)."""

    shape: tuple
    stride: tuple
    dtype: object


def product_ops() -> set:
    """The op packets that are matrix products: those torch's FLOP counter counts, and the CPU's fused attention."""
    import torch
    from torch.utils.flop_counter import flop_registry

    # The FLOP counter has no formula for the CPU's fused attention, so it is added by hand.
    return set(flop_registry) | {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu,
                                 torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward}


def record_products(step) -> list:
    """``(op, args, kwargs)`` of every matrix product that ``step()`` dispatches, tensors as their specs."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_map

    def spec(x):
        if isinstance(x, torch.Tensor):
            return TensorSpec(tuple(x.shape), tuple(x.stride()), x.dtype)
        return x

    calls, products = [], product_ops()

    class Recorder(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func.overloadpacket in products:
                calls.append((func, tree_map(spec, args), tree_map(spec, kwargs)))
            return func(*args, **kwargs)

    with Recorder():
        step()
    return calls


def materialize(calls: list) -> list:
    """The recorded calls with random tensors in place of the specs (one tensor per distinct spec)."""
    import torch
    from torch.utils._pytree import tree_map

    tensors = {}

    def build(x):
        if isinstance(x, TensorSpec):
            if x not in tensors:
                tensors[x] = torch.empty_strided(x.shape, x.stride, dtype=x.dtype).normal_()
            return tensors[x]
        return x

    return [(func, tree_map(build, args), tree_map(build, kwargs)) for func, args, kwargs in calls]


def replay_seconds(calls: list, repeats: int) -> dict[str, float]:
    """Best-of-``repeats`` time of the calls run back to back, split by op name."""
    import torch

    best: dict[str, float] = {}
    with torch.no_grad():
        for _ in range(repeats):
            spent: dict[str, float] = {}
            for func, args, kwargs in calls:
                start = time.perf_counter()
                func(*args, **kwargs)
                name = func.overloadpacket.__name__
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - start
            if sum(spent.values()) < sum(best.values() or [float("inf")]):
                best = spent
    return best


def main() -> None:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from bench_distill import _matmul_flops_per_second, add_step_arguments, setup_steps  # run as a script, benchmarks/ is on the path
    from clir_eval.distill.losses import LossOptions, build_loss

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_step_arguments(parser)
    parser.add_argument("--steps", type=int, default=6, help="timed steps (after 2 warm-up steps)")
    parser.add_argument("--repeats", type=int, default=3, help="replays of each step's products (best kept)")
    args = parser.parse_args()
    _, student, teacher, data, batches, params, optimizer = setup_steps(args, args.batch_size * 50)
    kd = build_loss("kd", LossOptions())

    def train_step(batch) -> None:
        kd(student, teacher, batch).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def products_only(batch) -> None:
        kd(student, teacher, batch).backward()
        student.zero_grad(set_to_none=True)

    step_seconds, flops, product_seconds = 0.0, 0, {}
    for i in range(args.steps + 2):
        batch = data.batch(batches[i])
        start = time.perf_counter()
        train_step(batch)
        elapsed = time.perf_counter() - start
        calls = materialize(record_products(lambda: products_only(batch)))
        replay = replay_seconds(calls, args.repeats)
        if i < 2:  # oneDNN builds its kernels for each new shape on first use
            continue
        step_seconds += elapsed
        with FlopCounterMode(display=False) as counter:
            products_only(batch)
        flops += counter.get_total_flops()
        for name, seconds in replay.items():
            product_seconds[name] = product_seconds.get(name, 0.0) + seconds

    peak = _matmul_flops_per_second(student.hidden_size, args.batch_size * args.max_length)
    products = sum(product_seconds.values())
    n = args.steps
    print(f"{args.student}, batch {args.batch_size}, <= {args.max_length} tokens, {args.threads} threads, "
          f"{args.freeze_layers} lower layers frozen, {n} KD steps")
    print(f"step (forward, backward, clipping, AdamW): {step_seconds / n:.3f} s; {flops / n / 1e9:.1f} GFLOP "
          f"(torch's count) -> {flops / step_seconds / 1e9:.0f} GFLOP/s")
    print(f"its products alone: {products / n:.3f} s = {products / step_seconds:.0%} of the step; "
          + ", ".join(f"{name} {seconds / n:.3f} s" for name, seconds in sorted(product_seconds.items(),
                                                                                 key=lambda kv: -kv[1])))
    counted = products - product_seconds.get("_scaled_dot_product_flash_attention_for_cpu", 0.0) \
        - product_seconds.get("_scaled_dot_product_flash_attention_for_cpu_backward", 0.0)
    print(f"the counted products' own rate: {flops / counted / 1e9:.0f} GFLOP/s; the feed-forward GEMM "
          f"(bench_distill.py's ceiling): {peak / 1e9:.0f} GFLOP/s")
    print(f"against that ceiling: the step {flops / step_seconds / peak:.0%}; its products alone "
          f"{flops / products / peak:.0%} (the most any schedule of these products reaches)")
    print(f"the step against its products alone: {products / step_seconds:.0%}")


if __name__ == "__main__":
    main()
