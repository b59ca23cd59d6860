"""Eager vs torch.compile'd student backbone: KD steps of me5-small with every layer trained (dropout on), on the
same LAFAND sw batches, side by side in one process.

    python benchmarks/bench_compile.py --threads 2

Prints, for each, the time of the first step of every padded length (for the compiled backbone, its compilation)
and the mean time of the other steps, then the steady-state ratio.
"""

from __future__ import annotations

import argparse
import copy
import time


def main() -> None:
    import torch

    from bench_distill import prepare  # run as a script, benchmarks/ is on the path
    from clir_eval.distill.losses import LossOptions, build_loss

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    _, student, teacher, data, order = prepare("me5-small", "minilm-l6", "sw", 32 * args.batches, 64, 32, 0)
    batches = [data.batch(b) for b in order]
    print(f"{len(batches)} batches of 32, padded lengths {sorted({b.source['input_ids'].shape[1] for b in batches})}")
    loss_fn = build_loss("kd", LossOptions())
    weights = copy.deepcopy(student.state_dict())
    eager = student.backbone

    steady = {}
    for compiled in (False, True):
        student.backbone = eager
        student.load_state_dict(weights)
        if compiled:
            student.backbone = torch.compile(eager, dynamic=False)
        student.train()
        params = [p for p in student.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=1e-5)
        seen: set[int] = set()
        first = rest = 0.0
        for batch in batches:
            start = time.perf_counter()
            loss_fn(student, teacher, batch).backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            seconds = time.perf_counter() - start
            length = batch.source["input_ids"].shape[1]
            if length in seen:
                rest += seconds
            else:
                first += seconds
                seen.add(length)
        steady[compiled] = rest / (len(batches) - len(seen))
        print(f"{'compiled' if compiled else 'eager'}: first step of each length {first:.1f} s in all, then "
              f"{steady[compiled]:.3f} s per step", flush=True)
    print(f"compiled / eager, steady state: {steady[True] / steady[False]:.3f}")


if __name__ == "__main__":
    main()
