"""Training throughput of a KD step vs an OT step (pairs/s), measured side by side on the same batches.

    python benchmarks/bench_distill.py --student me5-small --teacher minilm-l6 --lang sw --threads 2

Both losses run the trainer's own pieces (length-bucketed batches of LAFAND pairs truncated to
``--max-length`` tokens, teacher under no_grad, frozen student embeddings, AdamW step);
KD and OT steps alternate (in alternating order) on the same batches so that load from other
processes hits both alike. ``--trainer`` also times ``distill()`` end to end for each method (checkpoint and save
excluded, as in ``DistillResult.pairs_per_second``).
"""

from __future__ import annotations

import argparse
import tempfile
import time


def _step_flops(loss_fn, student, teacher, batch) -> int:
    """FLOPs of one training step's forward and backward, as torch counts them (matmuls and attention)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        loss_fn(student, teacher, batch).backward()
    student.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def _matmul_flops_per_second(hidden: int, rows: int, seconds: float = 2.0, dtype: str = "float32") -> float:
    """GEMM rate of a (rows x hidden) @ (hidden x 4 hidden) product, the feed-forward layer's shape."""
    import torch

    a = torch.randn(rows, hidden).to(getattr(torch, dtype))
    b = torch.randn(hidden, 4 * hidden).to(getattr(torch, dtype))
    for _ in range(3):
        a @ b
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    return 2 * rows * hidden * 4 * hidden * count / (time.perf_counter() - start)


def prepare(student_name: str, teacher_name: str, lang: str, n_pairs: int, max_length: int, batch_size: int,
            freeze_layers: int) -> tuple:
    """The trainer's pieces for timing steps: ``(pairs, student, teacher, tokenized pairs, batch index lists)``.

    The student is frozen as ``DistillConfig`` defaults say (embeddings, dropout kept) plus ``freeze_layers``.
    """
    from clir_eval.collections.bitext import load_bitext
    from clir_eval.distill.data import TokenizedBitext, epoch_batches
    from clir_eval.distill.losses import match_dimensions
    from clir_eval.distill.start import freeze
    from clir_eval.distill.trainer import DistillConfig
    from clir_eval.models.sentence import SentenceEncoder

    pairs = load_bitext("lafand", lang, "train")[:n_pairs]
    teacher = SentenceEncoder.from_pretrained(teacher_name)
    teacher.requires_grad_(False).eval()
    student = SentenceEncoder.from_pretrained(student_name)
    config = DistillConfig(method="kd", student=student_name, teacher=teacher_name, max_length=max_length,
                           batch_size=batch_size, freeze_layers=freeze_layers)
    match_dimensions(student, teacher)
    freeze(student, embeddings=config.freeze_embeddings, layers=config.freeze_layers, dropout=config.dropout)
    data = TokenizedBitext(pairs, student, teacher, max_length, student_target=False)
    return pairs, student, teacher, data, epoch_batches(data.lengths, batch_size, seed=0, epoch=0, window=50)


def add_step_arguments(parser: argparse.ArgumentParser) -> None:
    """The models, batches and threads of a timed training step (``prepare``'s inputs), shared by the step benchmarks."""
    parser.add_argument("--student", default="me5-small")
    parser.add_argument("--teacher", default="minilm-l6")
    parser.add_argument("--lang", default="sw")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--freeze-layers", type=int, default=0, help="also freeze the lowest N student layers")


def setup_steps(args: argparse.Namespace, n_pairs: int) -> tuple:
    """``prepare`` from ``add_step_arguments``' values, seeded, with the student in training mode and its
    optimizer: ``(pairs, student, teacher, tokenized pairs, batch index lists, trained parameters, AdamW)``."""
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    pairs, student, teacher, data, batches = prepare(args.student, args.teacher, args.lang, n_pairs,
                                                     args.max_length, args.batch_size, args.freeze_layers)
    student.train()
    params = [p for p in student.parameters() if p.requires_grad]
    return pairs, student, teacher, data, batches, params, torch.optim.AdamW(params, lr=1e-5)


def main() -> None:
    import torch

    from clir_eval.distill.losses import LossOptions, build_loss
    from clir_eval.distill.trainer import DistillConfig, distill

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_step_arguments(parser)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per method (after 2 warm-up steps)")
    parser.add_argument("--bf16", action="store_true",
                        help="steps under CPU autocast to bfloat16; the ceiling is then the bfloat16 GEMM rate")
    parser.add_argument("--trainer", action="store_true", help="also time distill() end to end")
    parser.add_argument("--teacher-cache", action="store_true",
                        help="also time distill() over 2 epochs with and without cache_teacher")
    args = parser.parse_args()
    pairs, student, teacher, data, batches, params, optimizer = setup_steps(args, args.batch_size * 200)
    losses = {"kd": build_loss("kd", LossOptions()), "ot": build_loss("ot", LossOptions())}
    print(f"student {args.student}: {sum(p.numel() for p in params):,} of "
          f"{sum(p.numel() for p in student.parameters()):,} parameters trainable; teacher {args.teacher}; "
          f"batch {args.batch_size}, max {args.max_length} tokens, {args.threads} threads, "
          f"{args.freeze_layers} lower layers frozen", flush=True)

    seconds = {name: 0.0 for name in losses}
    tokens = 0
    flops = 0
    for i in range(args.steps + 2):
        batch = data.batch(batches[i])
        tokens += int(batch.source["attention_mask"].sum())
        if i >= 2:
            flops += _step_flops(losses["kd"], student, teacher, batch)
        # Alternate which method goes first, so neither always inherits a warm cache.
        for name, loss_fn in sorted(losses.items(), reverse=bool(i % 2)):
            start = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
                loss = loss_fn(student, teacher, batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if i >= 2:
                seconds[name] += time.perf_counter() - start
    pairs_timed = args.steps * args.batch_size
    for name in losses:
        print(f"{name}: {pairs_timed / seconds[name]:6.1f} pairs/s ({seconds[name] / args.steps:.3f} s/step)")
    # The ceiling: this machine's float32 matmul rate (a GEMM of the model's own shapes, measured here)
    # over the FLOPs a KD step does (counted by torch on the timed batches). No schedule beats it.
    dtype = "bfloat16" if args.bf16 else "float32"
    rate = _matmul_flops_per_second(student.hidden_size, args.batch_size * args.max_length, dtype=dtype)
    per_pair = flops / pairs_timed
    print(f"KD step: {per_pair / 1e9:.2f} GFLOP per pair (torch's count: student forward + backward, teacher "
          f"forward); {dtype} matmul peak here {rate / 1e9:.0f} GFLOP/s -> ceiling {rate / per_pair:.1f} pairs/s",
          flush=True)
    print(f"OT/KD step time ratio: {seconds['ot'] / seconds['kd']:.3f} "
          f"(mean {tokens / (args.steps + 2) / args.batch_size:.1f} foreign tokens per sentence)", flush=True)

    if args.trainer:
        for method in ("kd", "ot"):
            cfg = DistillConfig(method=method, student=args.student, teacher=args.teacher,
                                max_length=args.max_length, batch_size=args.batch_size, max_steps=args.steps,
                                freeze_layers=args.freeze_layers)
            with tempfile.TemporaryDirectory() as tmp:
                result = distill(cfg, pairs, [], f"{tmp}/student", show_progress=False)
            print(f"distill() {method}: {result.pairs_per_second:.1f} pairs/s over {result.steps} steps", flush=True)
    if args.teacher_cache:
        # Two epochs over half as many pairs: the cached run computes the teacher once per pair, before
        # training (that time counts here: both runs are timed from the start of distill()).
        half = pairs[: args.batch_size * max(1, args.steps // 2)]
        for method in ("kd", "ot"):
            seconds = {}
            for cache in (False, True):
                cfg = DistillConfig(method=method, student=args.student, teacher=args.teacher,
                                    max_length=args.max_length, batch_size=args.batch_size, epochs=2,
                                    freeze_layers=args.freeze_layers, cache_teacher=cache)
                with tempfile.TemporaryDirectory() as tmp:
                    start = time.perf_counter()
                    result = distill(cfg, half, [], f"{tmp}/student", show_progress=False)
                    seconds[cache] = time.perf_counter() - start
            print(f"distill() {method}, 2 epochs of {len(half)} pairs: {seconds[False]:.1f} s uncached, "
                  f"{seconds[True]:.1f} s with cache_teacher ({seconds[False] / seconds[True]:.2f}x; "
                  f"{result.steps} steps, load and save included)", flush=True)


if __name__ == "__main__":
    main()
