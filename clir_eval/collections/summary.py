"""Counts per collection, split and language (what ``clir-eval collections list`` shows)."""

from __future__ import annotations

from dataclasses import dataclass

from clir_eval.collections.registry import Collection


@dataclass(frozen=True)
class SummaryRow:
    """One (collection, split, language): queries, corpus size, relevant judgements for those queries."""

    collection: str
    split: str
    lang: str
    group: str
    num_queries: int
    num_documents: int
    num_relevant: int


def summarize(collection: Collection) -> list[SummaryRow]:
    """A row per split and language; ``num_relevant`` counts judgements with relevance > 0 of that language's qids."""
    num_documents = collection.count_documents()
    rows = []
    for split in collection.splits:
        relevant: dict[str, int] = {}
        for qrel in collection.qrels(split):
            if qrel.relevance > 0:
                relevant[qrel.qid] = relevant.get(qrel.qid, 0) + 1
        for lang in collection.languages_in(split):
            qids = [t.qid for t in collection.topics(lang, split)]
            rows.append(
                SummaryRow(
                    collection=collection.name,
                    split=split,
                    lang=lang,
                    group=collection.language_group(lang),
                    num_queries=len(qids),
                    num_documents=num_documents,
                    num_relevant=sum(relevant.get(q, 0) for q in qids),
                )
            )
    return rows
