"""What a training step's dropout costs on the CPU, against the matrix product it follows.

    python benchmarks/bench_dropout.py [--threads 2] [--batch 32] [--length 64]

The trainer's profile (docs/benchmarks.md) puts dropout's mask (``bernoulli_``) second after the matrix
products. This times, side by side in one run and at me5-small's shapes, torch's dropout against other ways of
drawing the same Bernoulli(1 - p) mask, and against the 384 x 384 product (attention output) that a hidden
dropout follows. Every variant draws from another random stream than ``F.dropout``, so swapping one in changes
the trained weights (and so the students' scores): it is a lever with a price, not a free speed-up.
"""

from __future__ import annotations

import argparse
import time
from typing import Callable


def timed(fn: Callable[[], object], repeats: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    import torch
    import torch.nn.functional as F

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--p", type=float, default=0.1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    b, n, p = args.batch, args.length, args.p
    hidden = torch.randn(b, n, 384)  # after attention output and after the feed-forward output
    probs = torch.randn(b, 12, n, n)  # attention probabilities (eager attention)
    weight = torch.randn(384, 384)
    gemm = timed(lambda: hidden.view(-1, 384) @ weight, args.repeats)
    print(f"threads {args.threads}, batch {b} x {n} tokens; 384x384 product: {gemm * 1e3:.2f} ms")
    variants = {
        "F.dropout (the trainer's)": lambda x: F.dropout(x, p, training=True),
        "bernoulli of a probability tensor": lambda x: x * torch.bernoulli(torch.full_like(x, 1 - p)) / (1 - p),
        "uniform < 1 - p": lambda x: x * (torch.rand_like(x) < 1 - p) / (1 - p),
    }
    for name, x in (("hidden states", hidden), ("attention probabilities", probs)):
        # Interleaved rounds, best of each: the variants see the same machine state.
        best = {label: float("inf") for label in variants}
        for _ in range(3):
            for label, fn in variants.items():
                best[label] = min(best[label], timed(lambda: fn(x), args.repeats))
        base = best["F.dropout (the trainer's)"]
        print(f"{name} ({x.numel():,} values):")
        for label, seconds in best.items():
            print(f"  {label:36s} {seconds * 1e3:6.2f} ms  {base / seconds:5.2f}x as fast as F.dropout  "
                  f"{seconds / gemm:5.2f}x the product")


if __name__ == "__main__":
    main()
