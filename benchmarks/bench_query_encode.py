"""Where one query encoder's time goes: batch size, length bucketing and padding, against the matmul peak.

    python benchmarks/bench_query_encode.py --lang sw --threads 2 --repeats 3 --limit 400

Encodes NTREX test topics with me5-small under several batching settings, interleaved repetition by
repetition so that load from other processes hits all alike, and prints for each the median wall time,
the GFLOP/s it reached (torch's FLOP count of that setting) as a share of this machine's float32 matmul
rate measured in the same run, and whether its vectors are byte-identical to the study's setting
(``SentenceEncoder.encode``: sorted by length, batch 32, lengths padded to a multiple of 8).
``--profile`` prints torch.profiler's operator table of the study's setting instead.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_distill import _matmul_flops_per_second  # noqa: E402  (the trainer benchmark's ceiling, same shapes)

# (label, batch size, sort by length, pad to a multiple of)
SETTINGS = [
    ("study: sorted, batch 32, pad x8", 32, True, 8),
    ("sorted, batch 16, pad x8", 16, True, 8),
    ("sorted, batch 64, pad x8", 64, True, 8),
    ("sorted, batch 128, pad x8", 128, True, 8),
    ("sorted, batch 32, no pad multiple", 32, True, 1),
    ("sorted, batch 32, pad x32", 32, True, 32),
    ("input order, batch 32, pad x8", 32, False, 8),
]


def _encode(model, texts: list[str], batch_size: int, sort: bool, multiple: int):
    """``SentenceEncoder.encode``'s loop with the batching knobs exposed (float32 ``(n, d)`` in input order)."""
    import numpy as np
    import torch

    encoded = model.tokenizer(model._prefixed(texts, "query"), truncation=True, max_length=model.config.max_length)
    order = (np.argsort([-len(ids) for ids in encoded["input_ids"]], kind="stable") if sort
             else np.arange(len(texts)))
    out = np.empty((len(texts), model.dim), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            idx = order[start : start + batch_size]
            batch = model.tokenizer.pad({k: [encoded[k][i] for i in idx] for k in encoded.keys()},
                                        return_tensors="pt", pad_to_multiple_of=multiple)
            out[idx] = model(dict(batch))["sentence_embedding"].numpy()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lang", default="sw")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--limit", type=int, default=0, help="first N topics only (0 = all)")
    parser.add_argument("--profile", action="store_true",
                        help="only print torch.profiler's operator table for the study's setting")
    args = parser.parse_args()

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from clir_eval.collections.registry import load_collection
    from clir_eval.models import trunk
    from clir_eval.models.sentence import SentenceEncoder

    torch.set_num_threads(args.threads)
    trunk.trunk_cache().resize(0)
    texts = [topic.text for topic in load_collection("ntrex").topics(args.lang, "test")]
    texts = texts[: args.limit] if args.limit else texts
    model = SentenceEncoder.from_pretrained("me5-small")
    reference = model.encode(texts, batch_size=32)
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as profiler:
            model.encode(texts, batch_size=32)
        print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=10))
        return
    flops, same, times = {}, {}, {label: [] for label, *_ in SETTINGS}
    for label, batch_size, sort, multiple in SETTINGS:  # untimed first pass: FLOPs, warm-up, exactness
        with FlopCounterMode(display=False) as counter:
            vectors = _encode(model, texts, batch_size, sort, multiple)
        flops[label] = counter.get_total_flops()
        same[label] = (vectors.tobytes() == reference.tobytes(), float(abs(vectors - reference).max()))
    for repeat in range(args.repeats):
        for label, batch_size, sort, multiple in (SETTINGS if repeat % 2 == 0 else SETTINGS[::-1]):
            start = time.perf_counter()
            _encode(model, texts, batch_size, sort, multiple)
            times[label].append(time.perf_counter() - start)
    rate = _matmul_flops_per_second(model.hidden_size, 32 * 40)
    print(f"NTREX {args.lang} test, {len(texts)} topics, me5-small, threads {args.threads}, median of "
          f"{args.repeats} repetitions; float32 matmul here {rate / 1e9:.0f} GFLOP/s")
    for label, *_ in SETTINGS:
        seconds = statistics.median(times[label])
        exact, diff = same[label]
        print(f"{label:36s} {seconds:7.1f} s  {flops[label] / 1e9:6.0f} GFLOP  {flops[label] / seconds / 1e9:5.0f} "
              f"GFLOP/s = {100 * flops[label] / seconds / rate:3.0f} % of matmul  "
              f"{'byte-identical' if exact else f'max |diff| {diff:.1e}'}")


if __name__ == "__main__":
    main()
