"""Query encoding by me5-small and students sharing its frozen trunk, against the same encoders run separately.

    python benchmarks/bench_trunk.py --lang sw --threads 2 --repeats 3

The students are me5-small copies whose upper layers (above ``--frozen``) are perturbed and which carry a
projection, saved to a temporary directory and loaded back as the study loads students. All five encoders
are loaded first; each repetition then encodes one language's NTREX test topics with each of them, once
with the trunk cache off (separate runs) and once with it on (``clir_eval.models.trunk``), in alternating
order so that load from other processes hits both alike. Prints the median wall times of the five
encodings, the ratio, whether every encoder's vectors are byte-identical in the two modes, and where the
time goes: the FLOPs torch counts for one encoder's pass against this machine's float32 matmul rate
measured in the same run (after the repetitions).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_distill import _matmul_flops_per_second  # noqa: E402  (the trainer benchmark's ceiling, same shapes)

logger = logging.getLogger("bench_trunk")


def _make_students(directory: Path, count: int, frozen: int) -> list[Path]:
    """me5-small copies with layers >= ``frozen`` perturbed and an identity-initialised projection."""
    import torch

    from clir_eval.models.sentence import SentenceEncoder

    paths = []
    for index in range(count):
        model = SentenceEncoder.from_pretrained("me5-small")
        generator = torch.Generator().manual_seed(index)
        with torch.no_grad():
            for layer in model.backbone.encoder.layer[frozen:]:
                for param in layer.parameters():
                    param.add_(1e-3 * torch.randn(param.shape, generator=generator))
        model.add_projection(model.hidden_size, seed=index)
        paths.append(model.save(directory / f"student{index}"))
    return paths


def _encode_all(models: list, texts: list[str], batch_size: int, shared: bool) -> tuple[float, list]:
    from clir_eval.models import trunk

    cache = trunk.trunk_cache()
    cache.resize(trunk.DEFAULT_CACHE_MIB * 2**20 if shared else 0)
    trunk.forget()
    vectors, seconds = [], []
    for model in models:
        start = time.perf_counter()
        vectors.append(model.encode(texts, role="query", batch_size=batch_size))
        seconds.append(time.perf_counter() - start)
    logger.info("%s: %s s per encoder", "shared" if shared else "separate", ", ".join(f"{s:.1f}" for s in seconds))
    return sum(seconds), vectors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lang", default="sw")
    parser.add_argument("--students", type=int, default=4)
    parser.add_argument("--frozen", type=int, default=6, help="lower layers the students share with me5-small")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32, help="the study's query batch size")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--limit", type=int, default=0, help="first N topics only (0 = all)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from clir_eval.collections.registry import load_collection
    from clir_eval.models import trunk
    from clir_eval.models.sentence import SentenceEncoder

    torch.set_num_threads(args.threads)
    texts = [topic.text for topic in load_collection("ntrex").topics(args.lang, "test")]
    texts = texts[: args.limit] if args.limit else texts
    times: dict[bool, list[float]] = {False: [], True: []}
    first: dict[bool, list] = {}
    with tempfile.TemporaryDirectory(prefix="bench-trunk.") as tmp:
        paths = _make_students(Path(tmp), args.students, args.frozen)
        models = [SentenceEncoder.from_pretrained("me5-small")] + [SentenceEncoder.from_pretrained(str(p))
                                                                   for p in paths]
        # Untimed first pass, also the warm-up (oneDNN prepares its kernels for each new batch shape once).
        trunk.trunk_cache().resize(0)
        with FlopCounterMode(display=False) as counter:
            models[0].encode(texts, batch_size=args.batch_size)
        flops = counter.get_total_flops()
        hits = None
        for repeat in range(args.repeats):
            for shared in ((False, True) if repeat % 2 == 0 else (True, False)):
                seconds, vectors = _encode_all(models, texts, args.batch_size, shared)
                times[shared].append(seconds)
                first.setdefault(shared, vectors)
                if shared:
                    hits = dict(trunk.trunk_cache().stats.hits)
                print(f"repeat {repeat + 1}: {'shared  ' if shared else 'separate'} {seconds:7.1f} s", flush=True)
        rate = _matmul_flops_per_second(models[0].hidden_size, args.batch_size * 40)
    identical = all(a.tobytes() == b.tobytes() for a, b in zip(first[False], first[True], strict=True))
    separate, shared = statistics.median(times[False]), statistics.median(times[True])
    tokens = sum(len(ids) for ids in models[0].tokenizer(["query: " + t for t in texts])["input_ids"])
    print(f"NTREX {args.lang} test: {len(texts)} topics ({tokens} tokens); me5-small + {args.students} students "
          f"sharing {args.frozen} frozen layers; threads {args.threads}, batch {args.batch_size}; "
          f"median of {args.repeats} repetitions")
    print(f"five separate encoders : {separate:7.1f} s   (each run: {', '.join(f'{t:.1f}' for t in times[False])})")
    print(f"sharing the trunk      : {shared:7.1f} s   (each run: {', '.join(f'{t:.1f}' for t in times[True])})")
    print(f"ratio separate/shared  : {separate / shared:7.2f}x (goal >= 1.6x); cache hits by depth {hits}")
    print(f"same vectors           : {'byte-identical' if identical else 'DIFFERENT'} for all "
          f"{len(models)} encoders")
    per_encoder = separate / len(models)
    print(f"where the time goes    : one encoder's pass = {flops / 1e9:.0f} GFLOP (torch's count) in "
          f"{per_encoder:.1f} s = {flops / per_encoder / 1e9:.0f} GFLOP/s; float32 matmul here "
          f"{rate / 1e9:.0f} GFLOP/s -> {100 * flops / per_encoder / rate:.0f} % of it")


if __name__ == "__main__":
    main()
