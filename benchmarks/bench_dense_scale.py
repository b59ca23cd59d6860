"""Dense indexing at collection scale: seconds and peak memory per step at 10k / 100k / 1M passages.

Everything is built from text the repository ships (no download):

* **Collections.** Passages of 3-5 English LAFAND sentences (``collections/lafand/*-en.*.jsonl.gz``), drawn with a
  seed, written as a bring-your-own collection (``corpus.jsonl.gz``, topics and qrels) in a temporary folder. The
  queries are NTREX's 1,997 English sentences (the oracle topics of the ``ntrex`` collection).
* **Encoders.** ``--model teacher`` is all-MiniLM-L6-v2. ``--model light`` is the same model cut to its
  first ``--light-layers`` transformer layers (0: the embedding layer only), built here: real token vectors at a small
  fraction of the teacher's cost. It measures what the pipeline itself costs at 1M documents (reading, tokenising,
  chunk files, the index), and gives 384-d vectors with a realistic spread for the recall of compressed indexes.
  The full teacher at 1M takes hours on 2 cores.

Each step runs as its own ``clir-eval`` subprocess; its wall time and peak RSS come from ``os.wait4``.

Steps (``--steps``):

* ``index``: ``clir-eval index dense`` (flat), the encoded chunks kept for the other kinds.
* ``resume``: the same build killed (SIGKILL) at about half its time, then run again; prints the rerun's time as a
  fraction of an uninterrupted build and whether the vectors are identical.
* ``kinds``: IVF/PQ/SQ/HNSW indexes built from the kept vectors (``--factory`` strings), each searched for the NTREX
  English queries at 100 hits; recall@100 against flat's hits and queries/s against flat's, side by side. A refined
  index (``IVF4096,PQ64x4fs,Refine(SQ8)``) is searched at each ``--k-factor`` too (candidates re-scored per hit).
* ``speed``: encoding passages/s of the teacher, in process: one thread and 64 passages a batch (the old defaults)
  against all cores with 64 a batch, all cores with the CPU's token budget (today's default), the same through
  OpenVINO (``--backend openvino``, when installed) and, on a CPU with native bf16, bf16; interleaved ``--rounds``
  times after a warm-up round, the median passages/s of each printed with its range, and the machine's fp32 matmul
  rate measured in the same run with the share of it reached.
* ``profile``: where the teacher's encoding time goes with today's defaults (torch profiler, self time by
  operator: the linear layers' matrix products, attention, GELU, ...), after a warm-up.
* ``versus``: the whole ``clir-eval index dense`` command, defaults only, against the same command of an earlier
  commit (``--old-commit``, its files exported under the work folder), against today's with the CPU's token
  budget lifted (64 passages a batch whatever their length) and today's with ``--backend openvino`` (when
  installed), interleaved ``--rounds`` times; prints the median wall seconds of each and its ratio to the old
  command.

Usage::

    python benchmarks/bench_dense_scale.py --sizes 10000 100000 1000000 --model light --steps index
    python benchmarks/bench_dense_scale.py --sizes 1000000 --model light --steps kinds
    python benchmarks/bench_dense_scale.py --sizes 2000 --model teacher --steps speed
    python benchmarks/bench_dense_scale.py --sizes 400 --model teacher --steps profile
    python benchmarks/bench_dense_scale.py --sizes 20000 --model light --steps resume
    python benchmarks/bench_dense_scale.py --sizes 4000 --model teacher --steps versus --old-commit baab52f --rounds 3
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "clir_eval"]


def english_sentences() -> list[str]:
    """The English side of every shipped LAFAND pair (about 60k sentences)."""
    sentences = []
    for file in sorted((ROOT / "collections" / "lafand").glob("*-en.*.jsonl.gz")):
        with gzip.open(file, "rt", encoding="utf-8") as handle:
            sentences.extend(json.loads(line)["target"] for line in handle if line.strip())
    return sentences


def make_collection(root: Path, size: int, seed: int = 0) -> Path:
    """A collection of ``size`` passages (3-5 sentences each) and NTREX's English queries."""
    from clir_eval.collections.registry import load_collection

    if (root / "corpus.jsonl.gz").is_file():
        return root
    rng = random.Random(seed)
    sentences = english_sentences()
    root.mkdir(parents=True, exist_ok=True)
    with gzip.open(root / "corpus.jsonl.gz", "wt", encoding="utf-8", compresslevel=1) as handle:
        for i in range(size):
            text = " ".join(rng.choice(sentences) for _ in range(rng.randint(3, 5)))
            handle.write(json.dumps({"id": f"p{i}", "contents": text}, ensure_ascii=False) + "\n")
    ntrex = load_collection("ntrex")
    (root / "topics").mkdir(exist_ok=True)
    shutil.copy(ntrex.topics_path("en", "test"), root / "topics" / f"en{Path(ntrex.topics_path('en', 'test')).suffix}")
    # One judgement per query, so the collection validates; the scores are not the point here.
    qids = [t.qid for t in ntrex.topics("en", "test")]
    (root / "qrels.txt").write_text("".join(f"{q} 0 p0 1\n" for q in qids), encoding="utf-8")
    return root


def make_light_model(path: Path, layers: int) -> Path:
    """all-MiniLM-L6-v2 cut to its first ``layers`` layers (its tokenizer, pooling and normalisation kept)."""
    from transformers import AutoModel

    from clir_eval.models.registry import resolve_model

    if (path / "config.json").is_file():
        return path
    source = Path(resolve_model("minilm-l6").local_path())
    shutil.copytree(source, path, ignore=shutil.ignore_patterns("model.safetensors", "pytorch_model.bin", "config.json"))
    model = AutoModel.from_pretrained(source)
    model.encoder.layer = model.encoder.layer[:layers]
    model.config.num_hidden_layers = layers
    model.save_pretrained(path)
    return path


def timed(command: list[str], env: dict[str, str], kill_after: float | None = None,
          cwd: Path = ROOT) -> tuple[float, float, int]:
    """``(seconds, peak RSS in GiB, exit code)`` of one subprocess (killed with SIGKILL after ``kill_after`` s)."""
    # stderr (the command's progress lines) goes to a file, not a pipe: a build of many minutes logs more than a
    # pipe holds, and a child blocked on a full pipe would hang the benchmark. `tail -f` it to watch a long step.
    log = Path(tempfile.gettempdir()) / "bench_dense_scale.stderr.log"
    start = time.perf_counter()
    with log.open("wb") as stderr:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        if kill_after is not None:
            try:
                process.wait(timeout=kill_after)
            except subprocess.TimeoutExpired:
                process.send_signal(signal.SIGKILL)
        _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, -signal.SIGKILL):
        print(log.read_text(encoding="utf-8", errors="replace")[-3000:], file=sys.stderr)
        raise SystemExit(f"failed ({code}): {' '.join(command)}")
    return seconds, usage.ru_maxrss / 2**20, code


def index_command(collection: Path, model: str, out: Path, *extra: str) -> list[str]:
    return [*CLI, "index", "dense", "--collection", str(collection), "--model", model, "--out", str(out), *extra]


def step_index(collection: Path, model: str, work: Path, env: dict[str, str], size: int) -> None:
    out = work / "flat"
    seconds, rss, _ = timed(index_command(collection, model, out, "--keep-vectors"), env)
    vectors_gib = size * 384 * 4 / 2**30
    print(f"index  {size:>9,} docs  {seconds:8.1f} s  {size / seconds:8.1f} docs/s  peak RSS {rss:5.2f} GiB "
          f"(vectors {vectors_gib:.2f} GiB, so {rss - vectors_gib:+.2f} GiB beyond them)", flush=True)


def step_resume(collection: Path, model: str, work: Path, env: dict[str, str], size: int) -> None:
    import numpy as np

    from clir_eval.retrieval.dense import read_vectors

    whole, _, _ = timed(index_command(collection, model, work / "whole", "--chunk-size", "1024"), env)
    killed_at = whole / 2
    timed(index_command(collection, model, work / "killed", "--chunk-size", "1024"), env, kill_after=killed_at)
    rerun, _, _ = timed(index_command(collection, model, work / "killed", "--chunk-size", "1024"), env)
    same = np.array_equal(read_vectors(work / "whole")[0], read_vectors(work / "killed")[0])
    print(f"resume {size:>9,} docs  uninterrupted {whole:.1f} s; killed at {killed_at:.1f} s, rerun {rerun:.1f} s "
          f"= {rerun / whole:.2f}x; identical vectors: {same}", flush=True)


def step_kinds(collection: Path, model: str, work: Path, env: dict[str, str], size: int, factories: list[str],
               nprobes: list[int], threads: int, k_factors: list[int]) -> None:
    import faiss
    import numpy as np

    from clir_eval.collections.registry import load_collection
    from clir_eval.models.pyserini_adapters import QueryEncoder
    from clir_eval.retrieval.dense import batch_search, encode_queries, open_dense_searcher, vectors_dir

    flat = work / "flat"
    if not (flat / "index").is_file():
        timed(index_command(collection, model, flat, "--keep-vectors"), env)
    topics = load_collection(collection).topics("en", "test")
    queries = encode_queries(topics, QueryEncoder(model))
    qids = [t.qid for t in topics]

    def search(index: Path, **knobs: int) -> tuple[dict, float, float, float]:
        """Hits, seconds to read the index, and the median of 5 searches of every query: Faiss's own search
        (the index's speed) and the whole path to hits (Pyserini's result objects and ours included)."""
        from clir_eval.retrieval.faiss_index import faiss_threads

        start = time.perf_counter()
        searcher = open_dense_searcher(index, nprobe=knobs.get("nprobe"), ef_search=knobs.get("ef_search"),
                                       k_factor=knobs.get("k_factor"))
        load = time.perf_counter() - start
        raw, whole = [], []
        for _ in range(5):
            with faiss_threads(threads):
                start = time.perf_counter()
                searcher.index.search(queries, 100)
                raw.append(time.perf_counter() - start)
            start = time.perf_counter()
            hits = batch_search(searcher, qids, queries, k=100, threads=threads)
            whole.append(time.perf_counter() - start)
        return hits, load, float(np.median(raw)), float(np.median(whole))

    search(flat)  # the first search starts Java (Pyserini's searcher module): not part of any index's speed
    exact, flat_load, flat_raw, flat_whole = search(flat)
    n = len(qids)
    print(f"kinds  {size:>9,} docs  Flat: {n / flat_raw:7.0f} queries/s in Faiss, {n / flat_whole:7.0f} through "
          f"search_dense (recall 1.000); read in {flat_load:.1f} s", flush=True)
    for factory in factories:
        out = work / factory.replace(",", "_")
        # Built from the flat build's kept encoding: no encoding again.
        seconds, rss, _ = timed(index_command(collection, model, out, "--factory", factory, "--keep-vectors",
                                              "--vectors", str(vectors_dir(flat))), env)
        size_mib = (out / "index").stat().st_size / 2**20
        refined = isinstance(faiss.downcast_index(faiss.read_index(str(out / "index"), faiss.IO_FLAG_MMAP)),
                             faiss.IndexRefine)
        for nprobe, k_factor in itertools.product(nprobes, k_factors if refined else [None]):
            found, load, raw, whole = search(out, nprobe=nprobe, ef_search=nprobe, k_factor=k_factor)
            recall = np.mean([len({d for d, _ in found[q]} & {d for d, _ in exact[q]}) / max(1, len(exact[q]))
                              for q in qids])
            knob = f"nprobe/efSearch {nprobe:>4}" + (f", k_factor {k_factor:>2}" if k_factor else "")
            print(f"kinds  {size:>9,} docs  {factory:<14} {knob}: recall@100 {recall:.3f}; "
                  f"{n / raw:7.0f} queries/s in Faiss = {flat_raw / raw:5.1f}x flat, {n / whole:7.0f} through "
                  f"search_dense = {flat_whole / whole:4.1f}x; read in {load:.1f} s; build {seconds:.0f} s, "
                  f"peak {rss:.2f} GiB, index {size_mib:,.0f} MiB", flush=True)


def matmul_gflops(threads: int) -> float:
    """fp32 GEMM rate (GFLOP/s) at the shapes of a MiniLM layer (a batch of 64 x 128 tokens, 384 -> 1536)."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(64 * 128, 384), torch.randn(384, 1536)
    for _ in range(3):
        a @ b
    start, repeats = time.perf_counter(), 20
    for _ in range(repeats):
        a @ b
    return 2 * a.shape[0] * 384 * 1536 * repeats / (time.perf_counter() - start) / 1e9


def teacher_passages(size: int) -> list[str]:
    """The first ``size`` passages of :func:`make_collection`'s corpus, in memory."""
    rng = random.Random(0)
    sentences = english_sentences()
    return [" ".join(rng.choice(sentences) for _ in range(rng.randint(3, 5))) for _ in range(size)]


def step_profile(size: int, threads: int) -> None:
    """Where the teacher's encoding time goes with today's defaults: torch operators by their own (self) time."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from clir_eval.models.sentence import SentenceEncoder

    passages = teacher_passages(size)
    model = SentenceEncoder.from_pretrained("minilm-l6")
    torch.set_num_threads(threads)
    model.encode(passages[: max(1, size // 8)], role="passage", batch_size=64)  # warm-up: oneDNN prepares kernels
    with profile(activities=[ProfilerActivity.CPU]) as trace:
        model.encode(passages, role="passage", batch_size=64)
    events = sorted(trace.key_averages(), key=lambda event: event.self_cpu_time_total, reverse=True)
    total = sum(event.self_cpu_time_total for event in events)
    print(f"profile {size:,} passages on {threads} threads, {total / 1e6:.1f} s of operator time", flush=True)
    for event in events[:8]:
        print(f"profile {event.key:<52} {event.self_cpu_time_total / total:6.1%} in {event.count:5} calls, "
              f"{event.self_cpu_time_total / event.count / 1e3:7.2f} ms each", flush=True)


def step_speed(size: int, threads: int, rounds: int) -> None:
    """Passages/s of the teacher, interleaved: one thread and 64 passages a batch (the old defaults), all cores with
    64 a batch, all cores with the CPU's token budget (today's default), the same through OpenVINO, and bf16 where
    the CPU has it natively."""
    import torch

    from clir_eval.models.openvino_backbone import OpenVINOBackbone, openvino_missing
    from clir_eval.models.sentence import CPU_BATCH_TOKENS, SentenceEncoder

    passages = teacher_passages(size)
    model = SentenceEncoder.from_pretrained("minilm-l6")
    tokens = sum(len(ids) for ids in model.tokenizer(passages, truncation=True,
                                                     max_length=model.config.max_length)["input_ids"])
    # Multiply-adds of the six layers per token (QKV, output, two FFN matrices), attention scores left out.
    flops_per_token = 2 * 6 * (4 * 384 * 384 + 2 * 384 * 1536)
    uncapped = 10**9
    settings = [("1 thread, 64 a batch", 1, torch.float32, uncapped, None),
                (f"{threads} threads, 64 a batch", threads, torch.float32, uncapped, None),
                (f"{threads} threads, {CPU_BATCH_TOKENS} tokens", threads, torch.float32, CPU_BATCH_TOKENS, None)]
    if openvino_missing() is None:
        settings.append((f"{threads} threads, OpenVINO", threads, torch.float32, CPU_BATCH_TOKENS,
                         OpenVINOBackbone(model, threads)))
    if torch.ops.mkldnn._is_mkldnn_bf16_supported():  # emulated bf16 is many times slower: not worth the wait
        settings.append((f"{threads} threads bf16", threads, torch.bfloat16, CPU_BATCH_TOKENS, None))
    rates: dict[str, list[float]] = {name: [] for name, *_ in settings}
    for round_ in range(rounds + 1):
        for name, count, dtype, batch_tokens, runner in settings:
            torch.set_num_threads(count)
            model.to(dtype)
            # Round 0 only warms up (oneDNN prepares its kernels for each shape once), on a slice: not counted.
            sample = passages if round_ else passages[: max(1, size // 8)]
            start = time.perf_counter()
            model.encode(sample, role="passage", batch_size=64, batch_tokens=batch_tokens, runner=runner)
            if round_:
                rates[name].append(size / (time.perf_counter() - start))
    # Medians: on shared 2-core machines one round can be 15 % off, and a best-of would pick the luckiest.
    median = {name: statistics.median(values) for name, values in rates.items()}
    peak = matmul_gflops(threads)
    print(f"speed  {size:,} passages, {tokens / size:.0f} tokens each; fp32 matmul rate on {threads} threads: "
          f"{peak:.0f} GFLOP/s", flush=True)
    for name, *_ in settings:
        gflops = median[name] * tokens / size * flops_per_token / 1e9
        print(f"speed  {name:<26} {median[name]:7.1f} passages/s (median of {rounds}; "
              f"{min(rates[name]):.1f}-{max(rates[name]):.1f}) = {median[name] / median[settings[0][0]]:4.2f}x the old "
              f"defaults; {gflops:5.1f} GFLOP/s = {gflops / peak:.0%} of the fp32 matmul rate", flush=True)


def step_versus(collection: Path, model: str, work: Path, env: dict[str, str], size: int, old_commit: str,
                rounds: int) -> None:
    """Today's ``clir-eval index dense`` against ``old_commit``'s, each with its defaults, in turn."""
    old_tree = work / f"tree-{old_commit}"
    if not old_tree.is_dir():  # an export of the commit's files (git archive), no worktree to clean up
        old_tree.mkdir(parents=True)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", old_commit], check=True, capture_output=True)
        subprocess.run(["tar", "-x", "-C", str(old_tree)], input=archive.stdout, check=True)
    # The old tree may predate `python -m clir_eval`: its CLI app is called directly, run from that tree so that
    # its package is the one imported (python -c puts the working directory first on the path).
    old_cli = [sys.executable, "-c", "import sys; from clir_eval.cli import app; sys.argv[0] = 'clir-eval'; app()"]
    # "today, 64 a batch" lifts the CPU's token budget (models.sentence.CPU_BATCH_TOKENS): what the budget adds.
    commands = {"today": (index_command(collection, model, work / "versus-today"), env),
                "today, 64 a batch": (index_command(collection, model, work / "versus-today", "--batch-tokens",
                                                    str(10**9)), env),
                old_commit: ([*old_cli, *index_command(collection, model, work / "versus-old")[len(CLI):]], env)}
    from clir_eval.models.openvino_backbone import openvino_missing

    if openvino_missing() is None:
        commands["today, OpenVINO"] = (index_command(collection, model, work / "versus-today", "--backend",
                                                     "openvino"), env)
    seconds: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(rounds):
        for name, (command, command_env) in commands.items():
            for out in (work / "versus-today", work / "versus-old"):
                shutil.rmtree(out, ignore_errors=True)
                shutil.rmtree(out.with_name(out.name + ".vectors"), ignore_errors=True)
            seconds[name].append(timed(command, command_env, cwd=old_tree if name == old_commit else ROOT)[0])
    median = {name: statistics.median(times) for name, times in seconds.items()}
    for name in commands:
        print(f"versus {size:,} passages: {name:<17} {median[name]:6.1f} s (median of {rounds}; "
              f"{', '.join(f'{t:.1f}' for t in seconds[name])}) = {median[old_commit] / median[name]:.2f}x "
              f"the passages/s of {old_commit}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000])
    parser.add_argument("--model", choices=("light", "teacher"), default="light")
    parser.add_argument("--light-layers", type=int, default=0)
    parser.add_argument("--steps", nargs="+", default=["index"],
                        choices=("index", "resume", "kinds", "speed", "profile", "versus"))
    parser.add_argument("--old-commit", default="baab52f", help="versus: the commit to compare with (before streaming)")
    parser.add_argument("--factory", nargs="+", default=["IVF1024,SQ8", "IVF1024,PQ64"])
    parser.add_argument("--nprobe", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--k-factor", type=int, nargs="+", default=[4],
                        help="kinds: candidates per hit a refined index (...,Refine(SQ8), ...,RFlat) re-scores")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rounds", type=int, default=2, help="speed, versus: interleaved rounds")
    parser.add_argument("--work", type=Path, default=None, help="keep collections and indexes here (default: temp)")
    args = parser.parse_args()

    work_root = args.work or Path(tempfile.mkdtemp(prefix="bench-dense-scale."))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "CLIR_EVAL_CACHE": str(work_root / "cache")}
    model = ("minilm-l6" if args.model == "teacher"
             else str(make_light_model(work_root / f"light-{args.light_layers}", args.light_layers)))
    print(f"model: {args.model} ({model}); threads: {args.threads}; work: {work_root}", flush=True)
    try:
        for size in args.sizes:
            if "speed" in args.steps:
                step_speed(size, args.threads, args.rounds)
            if "profile" in args.steps:
                step_profile(size, args.threads)
            collection = make_collection(work_root / f"corpus-{size}", size)
            work = work_root / f"{args.model}-{size}"
            work.mkdir(exist_ok=True)
            if "index" in args.steps:
                step_index(collection, model, work, env, size)
            if "resume" in args.steps:
                step_resume(collection, model, work, env, size)
            if "kinds" in args.steps:
                step_kinds(collection, model, work, env, size, args.factory, args.nprobe, args.threads,
                           args.k_factor)
            if "versus" in args.steps:
                step_versus(collection, model, work, env, size, args.old_commit, args.rounds)
    finally:
        if args.work is None:
            shutil.rmtree(work_root, ignore_errors=True)


if __name__ == "__main__":
    main()
