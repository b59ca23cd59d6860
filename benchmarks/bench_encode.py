"""Corpus encoding speed: ``clir-eval index dense`` vs ``python -m pyserini.encode`` (same model, corpus, threads).

Both encode the XQuAD-R English corpus (1,180 sentences) with the teacher (all-MiniLM-L6-v2, mean pooling,
L2-normalised, max length 256, batch 64) into a Faiss flat index, each as a fresh subprocess with the same
thread count, so the wall times include model loading on both sides. The script also checks that the two
indexes hold the same vectors (cosine), so the faster one is not faster by computing something else.

Usage::

    python benchmarks/bench_encode.py [--threads 2] [--repeats 1]

Prints both wall times and the ratio (pyserini / ours); the goal is >= 1.5.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _timed(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    from clir_eval.collections.registry import load_collection
    from clir_eval.models.registry import resolve_model

    model_dir = resolve_model("minilm-l6").local_path()
    corpus = load_collection("xquad-r").corpus_path
    threads = str(args.threads)
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    ours_times, theirs_times = [], []
    with tempfile.TemporaryDirectory(prefix="bench-encode.") as tmp:
        ours_dir, theirs_dir = Path(tmp) / "ours", Path(tmp) / "pyserini"
        ours = [sys.executable, "-m", "clir_eval.cli", "index", "dense", "--collection", "xquad-r", "--model",
                "minilm-l6", "--out", str(ours_dir), "--batch-size", str(args.batch_size), "--threads", threads]
        theirs = [sys.executable, "-m", "clir_eval.retrieval.pyserini_cli", "pyserini.encode",
                  "input", "--corpus", str(corpus), "--fields", "text",
                  "output", "--embeddings", str(theirs_dir), "--to-faiss",
                  "encoder", "--encoder", model_dir, "--encoder-class", "auto", "--pooling", "mean", "--l2-norm",
                  "--fields", "text", "--max-length", "256", "--batch-size", str(args.batch_size),
                  "--dimension", "384", "--device", "cpu"]
        for _ in range(args.repeats):
            import shutil

            shutil.rmtree(ours_dir, ignore_errors=True)
            shutil.rmtree(theirs_dir, ignore_errors=True)
            ours_times.append(_timed(ours, env))
            theirs_times.append(_timed(theirs, env))

        import numpy as np

        from clir_eval.retrieval.dense import read_vectors

        mine, my_ids = read_vectors(ours_dir)
        pys, py_ids = read_vectors(theirs_dir)
        order = {docid: i for i, docid in enumerate(py_ids)}
        pys = pys[[order[d] for d in my_ids]]
        cosine = np.sum(mine * pys, axis=1) / (np.linalg.norm(mine, axis=1) * np.linalg.norm(pys, axis=1))

    ours_best, theirs_best = min(ours_times), min(theirs_times)
    print(f"corpus: xquad-r English, {len(my_ids)} sentences; model: minilm-l6; threads: {threads}; "
          f"batch: {args.batch_size}; repeats: {args.repeats} (best wall time kept)")
    print(f"clir-eval index dense : {ours_best:7.1f} s")
    print(f"pyserini.encode       : {theirs_best:7.1f} s")
    print(f"ratio pyserini/ours   : {theirs_best / ours_best:7.2f}x (goal >= 1.5x)")
    print(f"same vectors          : min cosine {cosine.min():.6f}, mean {cosine.mean():.6f}")


if __name__ == "__main__":
    main()
