"""Dev MRR of the untrained student (backbone + least-squares map) against how much text the map is fitted on.

Every point is the start ``clir-eval run`` would build (:func:`clir_eval.distill.start.fit_projection`), scored
on NTREX **dev** topics against the teacher's document vectors. The backbone runs once over the largest English
pool, the fit pairs and the topics; each point is then a closed-form fit on a prefix of that pool (the pools of
``english_pool`` are nested: one seeded order), so the whole curve costs one encoding pass. Pooling is linear,
so ``normalize(W^T mean(h))`` is the student's query vector exactly as its encoder computes it.

    python scripts/dev_start_curve.py --english 500 1000 2000 4000 8000 12000 --pairs 900
"""

from __future__ import annotations

import argparse
import random
import time


def main() -> None:
    import numpy as np
    import torch

    from clir_eval.collections.bitext import load_bitext
    from clir_eval.collections.english import english_pool
    from clir_eval.collections.registry import load_collection
    from clir_eval.distill.start import pooled_states
    from clir_eval.evaluation.evaluate import evaluate_run, qrels_from_records
    from clir_eval.models.pyserini_adapters import DocumentEncoder
    from clir_eval.models.sentence import SentenceEncoder
    from clir_eval.retrieval.dense import encode_documents

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--student", default="me5-small")
    parser.add_argument("--teacher", default="minilm-l6")
    parser.add_argument("--english", type=int, nargs="+", default=[500, 1000, 2000, 4000, 8000, 12000])
    parser.add_argument("--pairs", type=int, default=900, help="foreign -> English LAFAND pairs (sw, ha, yo)")
    parser.add_argument("--langs", nargs="+", default=["sw", "ha", "de"], help="NTREX dev query languages")
    parser.add_argument("--seed", type=int, default=13, help="the study seed (the runner's English order)")
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--ridge", type=float, default=1e-3)
    args = parser.parse_args()

    started = time.perf_counter()
    ntrex = load_collection("ntrex")
    student, teacher = SentenceEncoder.from_pretrained(args.student), SentenceEncoder.from_pretrained(args.teacher)
    english = english_pool(["lafand"], max(args.english), seed=args.seed,
                           test_collections=[ntrex, load_collection("xquad-r")])
    per_lang = args.pairs // 3
    pairs = [p for lang in ("sw", "ha", "yo") for p in
             random.Random(f"{args.seed}-{lang}-train").sample(load_bitext("lafand", lang, "train"), per_lang)]
    x_en = pooled_states(student, english, args.max_length)
    t_en = torch.from_numpy(teacher.encode(english, role="query")).double()
    x_pairs = pooled_states(student, [p.source for p in pairs], args.max_length)
    t_pairs = torch.from_numpy(teacher.encode([p.target for p in pairs], role="query")).double()
    documents = list(ntrex.documents())
    doc_vectors = torch.from_numpy(encode_documents(documents, DocumentEncoder(teacher)))
    docids = [doc.docid for doc in documents]
    qrels = qrels_from_records(ntrex.qrels("dev"))
    topics = {lang: ntrex.topics(lang, "dev") for lang in args.langs}
    queries = {lang: pooled_states(student, [t.text for t in topics[lang]], args.max_length) for lang in args.langs}
    print(f"encoded {len(english)} English sentences, {len(pairs)} pairs and the dev topics in "
          f"{time.perf_counter() - started:.0f} s", flush=True)

    def mrr(weights: torch.Tensor, lang: str) -> float:
        vectors = queries[lang] @ weights
        if student.config.normalize:
            vectors = torch.nn.functional.normalize(vectors, dim=-1)
        scores = (vectors.float() @ doc_vectors.T).numpy()
        run = {t.qid: {docids[j]: float(scores[i, j]) for j in np.argsort(-scores[i])[:100]}
               for i, t in enumerate(topics[lang])}
        return float(np.nanmean(evaluate_run(qrels, run, ["mrr"])["mrr"]))

    def fit(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        gram = x.T @ x
        return torch.linalg.solve(gram + args.ridge * gram.diagonal().mean() * torch.eye(x.shape[1], dtype=x.dtype),
                                  x.T @ t)

    print("| map fitted on | " + " | ".join(args.langs) + " |")
    print("| --- | " + " | ".join("---" for _ in args.langs) + " |")
    rows = [(f"{args.pairs} pairs", fit(x_pairs, t_pairs))]
    for n in args.english:
        rows.append((f"{n} English", fit(x_en[:n], t_en[:n])))
        rows.append((f"{n} English + {args.pairs} pairs", fit(torch.cat([x_en[:n], x_pairs]),
                                                               torch.cat([t_en[:n], t_pairs]))))
    for label, weights in rows:
        print(f"| {label} | " + " | ".join(f"{mrr(weights, lang):.4f}" for lang in args.langs) + " |", flush=True)


if __name__ == "__main__":
    main()
