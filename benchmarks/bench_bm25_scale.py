"""BM25 at 10k-1M passages: Lucene indexing, search at 1,000 hits and writing the run, old path against new.

    python benchmarks/bench_bm25_scale.py [--sizes 10000 100000] [--against baab52f] [--work DIR]
                                          [--threads-check] [--index-threads 1]

For each size, a collection is built from the shipped English text (no download): the English sides of the
LAFAND bitext in ``collections/lafand/*.jsonl.gz``, 3-5 sentences per passage drawn with a fixed seed,
written as ``corpus.jsonl.gz``. The queries are the 1,327 NTREX sw test topics' English oracle
(``topics/ntrex/test/en.tsv``, what ``bm25-oracle`` searches), 1,000 hits each, BM25 k1=0.9 b=0.4.

Each step runs in its own child process, which reports its wall seconds, its peak RSS (``ru_maxrss``, the JVM
included, as it lives in the same process) and its CPU seconds (user + system, all threads):

* old: ``clir_eval/retrieval/bm25.py`` at ``--against`` (loaded from git): the corpus held in a list to hash
  it, ``add_batch_dict``; ``LuceneSearcher.batch_search`` into ``{qid: [(docid, score)]}``, then
  ``runs.write_run`` (search and write timed apart, the write's RSS is the peak of both);
* new: this tree: the index keyed by ``sha256_tree`` of the corpus file and streamed in raw JSON batches;
  ``write_bm25_run`` (search and writing in one pass, query by query, on the machine's cores).

Both runs must be byte-identical (checked and printed). ``--threads-check`` also writes the new run on one
thread and compares it.
"""

from __future__ import annotations

import argparse
import gzip
import json
import resource
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOPICS = ROOT / "topics" / "ntrex" / "test" / "en.tsv"
HITS = 1000


def english_sentences() -> list[str]:
    sentences = []
    for path in sorted((ROOT / "collections" / "lafand").glob("*-en.*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            sentences.extend(json.loads(line)["target"].strip() for line in handle if line.strip())
    return [s for s in dict.fromkeys(sentences) if s]  # unique, first-seen order


def build_corpus(path: Path, size: int, seed: int = 0) -> None:
    import numpy as np

    pool = english_sentences()
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, 6, size=size)
    picks = rng.integers(0, len(pool), size=int(lengths.sum()))
    with gzip.open(path, "wt", encoding="utf-8", compresslevel=1) as handle:
        at = 0
        for i, n in enumerate(lengths):
            text = " ".join(pool[j] for j in picks[at:at + n])
            at += n
            handle.write(json.dumps({"id": f"p{i:07d}", "contents": text}) + "\n")


def old_module(revision: str) -> types.ModuleType:
    source = subprocess.run(["git", "show", f"{revision}:clir_eval/retrieval/bm25.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    module = types.ModuleType(f"bm25_at_{revision}")
    sys.modules[module.__name__] = module  # dataclasses look their module up there
    exec(compile(source, f"{revision}:bm25.py", "exec"), module.__dict__)
    return module


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2  # KiB on Linux


def cpu_seconds() -> float:
    """User + system CPU of this process, all its threads (the JVM's too): steadier than wall time on a
    shared machine."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def queries():
    from clir_eval.collections.readers import read_topics
    from clir_eval.retrieval.translation.base import TranslatedQuery

    return [TranslatedQuery(t.qid, text=t.text) for t in read_topics(TOPICS, "en")]


def child(args: argparse.Namespace) -> None:
    """One step in this process; prints ``{"step": [seconds, peak RSS GB, CPU seconds], ...}`` as one JSON line."""
    from clir_eval.collections.readers import read_corpus

    report = {}
    started, cpu = time.perf_counter(), cpu_seconds()
    if args.child == "old-index":
        old_module(args.against).build_lucene_index(read_corpus(args.corpus), args.index)
        report["index"] = [time.perf_counter() - started, peak_rss_gb(), cpu_seconds() - cpu]
    elif args.child == "new-index":
        from clir_eval.io import sha256_tree
        from clir_eval.retrieval.bm25 import build_lucene_index

        build_lucene_index(read_corpus(args.corpus), args.index, corpus_sha256=sha256_tree(args.corpus),
                           threads=args.index_threads)
        report["index"] = [time.perf_counter() - started, peak_rss_gb(), cpu_seconds() - cpu]
    elif args.child == "old-search":
        from clir_eval.retrieval.runs import write_run

        old = old_module(args.against)
        topics = queries()
        started, cpu = time.perf_counter(), cpu_seconds()
        hits = old.search_bm25(args.index, topics, k=HITS)
        report["search"] = [time.perf_counter() - started, peak_rss_gb(), cpu_seconds() - cpu]
        started, cpu = time.perf_counter(), cpu_seconds()
        write_run(args.out, hits, tag="bm25-oracle", depth=HITS)
        report["write"] = [time.perf_counter() - started, peak_rss_gb(), cpu_seconds() - cpu]
    elif args.child == "new-search":
        from clir_eval.retrieval.bm25 import Bm25Config, write_bm25_run

        topics = queries()
        started, cpu = time.perf_counter(), cpu_seconds()
        write_bm25_run(args.index, topics, args.out, tag="bm25-oracle", k=HITS,
                       config=Bm25Config(threads=args.search_threads))
        report["search+write"] = [time.perf_counter() - started, peak_rss_gb(), cpu_seconds() - cpu]
    print(json.dumps(report))


def step(name: str, args: argparse.Namespace, **paths) -> dict:
    command = [sys.executable, __file__, "--child", name, "--against", args.against,
               "--index-threads", str(args.index_threads)]
    for key, value in paths.items():
        command += [f"--{key.replace('_', '-')}", str(value)]
    done = subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--against", default="baab52f", help="the revision of the old path (before the change)")
    parser.add_argument("--work", type=Path, default=None, help="keep collections and indexes here (default: temp)")
    parser.add_argument("--threads-check", action="store_true", help="also write the new run on one thread")
    parser.add_argument("--index-threads", type=int, default=1, help="new path's Lucene indexing threads")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    for hidden in ("corpus", "index", "out"):
        parser.add_argument(f"--{hidden}", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--search-threads", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    with tempfile.TemporaryDirectory(prefix="bench-bm25-") as temp:
        work = args.work or Path(temp)
        print(f"queries: {TOPICS.relative_to(ROOT)} (NTREX sw test topics' English oracle), {HITS} hits; "
              f"old = {args.against}, new = this tree", flush=True)
        print(f"{'docs':>9} {'step':<14} {'old s':>8} {'old GB':>7} {'old cpu':>8} {'new s':>8} {'new GB':>7} "
              f"{'new cpu':>8}", flush=True)
        for size in args.sizes:
            folder = work / f"passages-{size}"
            folder.mkdir(parents=True, exist_ok=True)
            corpus = folder / "corpus.jsonl.gz"
            if not corpus.exists():
                started = time.perf_counter()
                build_corpus(corpus, size)
                print(f"{size:>9,} built {corpus} in {time.perf_counter() - started:.0f} s", flush=True)
            old_run, new_run = folder / "old.run", folder / "new.run"
            old = {**step("old-index", args, corpus=corpus, index=folder / "lucene-old"),
                   **step("old-search", args, index=folder / "lucene-old", out=old_run)}
            new = {**step("new-index", args, corpus=corpus, index=folder / "lucene-new"),
                   **step("new-search", args, index=folder / "lucene-new", out=new_run)}
            old["search+write"] = [old["search"][0] + old["write"][0], old["write"][1],
                                   old["search"][2] + old["write"][2]]
            for name in ("index", "search", "write", "search+write"):
                o, n = old.get(name), new.get(name)
                cells = [f"{o[0]:8.1f} {o[1]:7.2f} {o[2]:8.1f}" if o else f"{'':8} {'':7} {'':8}",
                         f"{n[0]:8.1f} {n[1]:7.2f} {n[2]:8.1f}" if n else f"{'(one pass)':>8} {'':7} {'':8}"]
                print(f"{size:>9,} {name:<14} {cells[0]} {cells[1]}", flush=True)
            same = old_run.read_bytes() == new_run.read_bytes()
            lines = sum(1 for _ in new_run.open("rb"))
            print(f"{size:>9,} runs {'byte-identical' if same else 'DIFFER'} ({lines:,} lines)", flush=True)
            if args.threads_check:
                one_run = folder / "new-1-thread.run"
                one = step("new-search", args, index=folder / "lucene-new", out=one_run, search_threads=1)
                print(f"{size:>9,} one search thread: {one['search+write'][0]:.1f} s, run "
                      f"{'byte-identical' if one_run.read_bytes() == new_run.read_bytes() else 'DIFFERS'}",
                      flush=True)


if __name__ == "__main__":
    main()
