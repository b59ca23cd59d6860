"""A study's dense query runs over several languages: each run loading its encoder, against the encoders held.

    python benchmarks/bench_held.py --langs sw,ha,de --limit 300 --threads 2

The encoders are the default study's query side: me5-small, its untrained student (me5-small plus a projection,
the whole backbone shared) and students whose layers above ``--frozen`` differ (built as in bench_trunk.py, saved
to a temporary directory and loaded back from there). For every language, each encoder encodes that language's
NTREX test topics, in the study's order. Once as runs did before ``clir_eval.models.held``: load the model, encode,
drop it; once inside ``held.holding`` (the preload is timed too). The trunk cache is on in both, as in a study.
Prints the wall times, their ratio, and whether every encoding is byte-identical in the two modes.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_trunk import _make_students  # noqa: E402  (me5-small copies with perturbed upper layers)


def _runs(models: list[str], texts: dict[str, list[str]], batch_size: int, held: bool) -> tuple[float, dict]:
    from clir_eval.models import trunk
    from clir_eval.models.held import holding, load_encoder

    trunk.trunk_cache().resize(trunk.DEFAULT_CACHE_MIB * 2**20)
    trunk.forget()
    gc.collect()
    vectors = {}
    start = time.perf_counter()
    with holding(models) if held else contextlib.nullcontext():
        for lang, topics in texts.items():
            for model in models:
                encoder = load_encoder(model)
                vectors[lang, model] = encoder.encode(topics, role="query", batch_size=batch_size)
                del encoder
                gc.collect()  # a run's encoder is gone before the next run loads its own
    return time.perf_counter() - start, vectors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--langs", default="sw,ha,de")
    parser.add_argument("--students", type=int, default=3)
    parser.add_argument("--frozen", type=int, default=6, help="lower layers the students share with me5-small")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64, help="the study's query batch size")
    parser.add_argument("--limit", type=int, default=300, help="first N topics per language (0 = all)")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()

    import torch

    from clir_eval.collections.registry import load_collection

    torch.set_num_threads(args.threads)
    ntrex = load_collection("ntrex")
    texts = {}
    for lang in args.langs.split(","):
        topics = [topic.text for topic in ntrex.topics(lang, "test")]
        texts[lang] = topics[: args.limit] if args.limit else topics
    times: dict[bool, list[float]] = {False: [], True: []}
    first: dict[bool, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench-held.") as tmp:
        start = _make_students(Path(tmp) / "start", 1, frozen=12)  # nothing perturbed: me5-small + projection
        students = _make_students(Path(tmp), args.students, args.frozen)
        models = ["me5-small", *map(str, start + students)]
        _runs(models[:1], {next(iter(texts)): texts[next(iter(texts))][:64]}, args.batch_size, False)  # warm-up
        for repeat in range(args.repeats):
            for held in ((False, True) if repeat % 2 == 0 else (True, False)):
                seconds, vectors = _runs(models, texts, args.batch_size, held)
                times[held].append(seconds)
                first.setdefault(held, vectors)
                print(f"repeat {repeat + 1}: {'held    ' if held else 'per run '} {seconds:7.1f} s", flush=True)
    identical = all(first[False][key].tobytes() == first[True][key].tobytes() for key in first[False])
    per_run, held = min(times[False]), min(times[True])
    print(f"NTREX test topics, {len(texts)} languages x {sum(map(len, texts.values())) // len(texts)} topics; "
          f"me5-small, its untrained student and {args.students} students sharing {args.frozen} frozen layers; "
          f"threads {args.threads}, batch {args.batch_size}; best of {args.repeats}")
    print(f"each run loads its encoder : {per_run:7.1f} s")
    print(f"encoders held (models.held): {held:7.1f} s")
    print(f"ratio                      : {per_run / held:7.2f}x")
    print(f"same vectors               : {'byte-identical' if identical else 'DIFFERENT'} for all "
          f"{len(first[False])} encodings")


if __name__ == "__main__":
    main()
