"""Writing and reading TREC run files: this tree's ``clir_eval.retrieval.runs`` against an earlier revision's.

    python benchmarks/bench_run_files.py [--against 4ea3ed1] [--queries 1327] [--hits 100] [--repeats 5]

Builds one synthetic run (NTREX-sized by default: 1,327 queries x 100 hits, docids like ``ntrex-doc-0001``),
then times ``write_run`` and ``read_run_file`` of both modules on it, alternating, and prints the best time of
each and the ratio old / new (> 1: this tree is faster). The older module is loaded from ``git show
REV:clir_eval/retrieval/runs.py``; both must write byte-identical files and read back equal runs, checked first.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def module_at(revision: str) -> types.ModuleType:
    source = subprocess.run(["git", "show", f"{revision}:clir_eval/retrieval/runs.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    module = types.ModuleType(f"runs_at_{revision}")
    sys.modules[module.__name__] = module  # dataclasses look their module up there
    exec(compile(source, f"{revision}:runs.py", "exec"), module.__dict__)
    return module


def synthetic_run(queries: int, hits: int, seed: int = 0) -> dict[str, dict[str, float]]:
    rng = np.random.default_rng(seed)
    docs = [f"ntrex-doc-{i:04d}" for i in range(max(hits * 2, 123))]
    run = {}
    for q in range(queries):
        chosen = rng.choice(len(docs), size=hits, replace=False)
        scores = rng.random(hits).astype(np.float32)
        run[f"ntrex-{q:04d}"] = {docs[d]: float(s) for d, s in zip(chosen, scores)}
    return run


def seconds(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    from clir_eval.retrieval import runs as new

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--against", default="4ea3ed1", help="the earlier revision (default: before the change)")
    parser.add_argument("--queries", type=int, default=1327)
    parser.add_argument("--hits", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    old = module_at(args.against)
    run = synthetic_run(args.queries, args.hits)
    with tempfile.TemporaryDirectory() as tmp:
        old_path, new_path = Path(tmp) / "old.run", Path(tmp) / "new.run"
        old.write_run(old_path, run, tag="bench")
        new.write_run(new_path, run, tag="bench")
        assert old_path.read_bytes() == new_path.read_bytes(), "the two revisions write different files"
        old_read, new_read = old.read_run_file(old_path), new.read_run_file(new_path)
        assert (old_read.run, old_read.tag) == (new_read.run, new_read.tag), "the two revisions read differently"

        results = {}
        for what, old_fn, new_fn in (
            ("write_run", lambda: old.write_run(old_path, run, tag="bench"),
             lambda: new.write_run(new_path, run, tag="bench")),
            ("read_run_file", lambda: old.read_run_file(old_path), lambda: new.read_run_file(new_path)),
        ):
            old_times, new_times = [], []
            for _ in range(args.repeats):  # alternate, so a load change hits both sides
                old_times.append(seconds(old_fn))
                new_times.append(seconds(new_fn))
            results[what] = (min(old_times), min(new_times))

    lines = args.queries * args.hits
    print(f"{args.queries} queries x {args.hits} hits ({lines:,} lines), best of {args.repeats}; "
          f"{args.against} vs this tree")
    for what, (old_s, new_s) in results.items():
        print(f"  {what:14s} {old_s:7.3f} s vs {new_s:7.3f} s: {old_s / new_s:.2f}x")


if __name__ == "__main__":
    main()
