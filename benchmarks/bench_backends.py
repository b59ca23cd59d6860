"""Document encoding through torch and through OpenVINO (``--backend openvino``), side by side, for any model.

Both encode the same English documents (the first ``--docs`` of a built-in collection's corpus, by default
lafand-x's sentences) with :class:`~clir_eval.models.pyserini_adapters.DocumentEncoder`, in one process: a warm-up,
then ``--rounds`` interleaved rounds. Prints each backend's median documents/s with its range, and the largest
difference between their vectors, so the faster one is not faster by computing something else. OpenVINO's
gain depends on the model and the text length (docs/benchmarks.md).

Usage::

    python benchmarks/bench_backends.py --model minilm-l6
    python benchmarks/bench_backends.py --model me5-small --batch-size 128
    python benchmarks/bench_backends.py --model minilm-l6 --collection xquad-r --docs 1180
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm-l6", help="built-in name, directory or hub id")
    parser.add_argument("--collection", default="lafand-x")
    parser.add_argument("--docs", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from clir_eval.collections.registry import load_collection
    from clir_eval.models.openvino_backbone import openvino_missing
    from clir_eval.models.pyserini_adapters import DocumentEncoder
    from clir_eval.models.sentence import SentenceEncoder

    missing = openvino_missing()
    if missing:
        raise SystemExit(f"error: {missing}")
    texts = [doc.contents for doc in itertools.islice(load_collection(args.collection).documents(), args.docs)]
    model = SentenceEncoder.from_pretrained(args.model)
    tokens = int(model.tokenize(texts, "passage")["attention_mask"].sum())
    encoders = {backend: DocumentEncoder(model, batch_size=args.batch_size, backend=backend)
                for backend in ("torch", "openvino")}
    start = time.perf_counter()
    vectors = {backend: encoder.encode(texts) for backend, encoder in encoders.items()}  # the warm-up
    print(f"{args.model}: {len(texts)} documents of {args.collection}, {tokens / len(texts):.1f} tokens on average, "
          f"{args.batch_size} a batch; warm-up (both, with OpenVINO's conversion) {time.perf_counter() - start:.1f} s")
    rates: dict[str, list[float]] = {backend: [] for backend in encoders}
    for _ in range(args.rounds):
        for backend, encoder in encoders.items():
            start = time.perf_counter()
            encoder.encode(texts)
            rates[backend].append(len(texts) / (time.perf_counter() - start))
    for backend, values in rates.items():
        print(f"{backend:<9} {statistics.median(values):7.1f} documents/s (median of {args.rounds}; "
              f"{min(values):.1f}-{max(values):.1f})")
    print(f"openvino / torch: {statistics.median(rates['openvino']) / statistics.median(rates['torch']):.2f}x; "
          f"vectors at most {float(np.abs(vectors['openvino'] - vectors['torch']).max()):.1e} apart")


if __name__ == "__main__":
    main()
