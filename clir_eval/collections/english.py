"""English text for the student's initial map: the English sides of bitext, without anything of a test split.

The map is fitted on English sentences run through the student and the teacher
(:mod:`clir_eval.distill.start`). NTREX topics are sentences of its documents, so the pool leaves out every
sentence that equals a test topic or occurs in a document judged relevant for a test topic
(:func:`clir_eval.collections.leakage.drop_test_text`).
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Iterable, Sequence

from clir_eval.collections.bitext import bitext_languages, load_bitext

if TYPE_CHECKING:
    from clir_eval.collections.registry import Collection


def english_sides(sources: Sequence[str], split: str = "train") -> list[str]:
    """The English sides of every ``split`` pair of every language of ``sources``, first occurrence kept.

    Languages are read in sorted order, so the list does not depend on the file system.
    """
    seen: set[str] = set()
    english: list[str] = []
    for source in sources:
        for lang, splits in sorted(bitext_languages(source).items()):
            if split not in splits:
                continue
            for pair in load_bitext(source, lang, split):
                if pair.target_lang == "en" and pair.target not in seen:
                    seen.add(pair.target)
                    english.append(pair.target)
    return english


def english_pool(sources: Sequence[str], count: int, *, seed: int | str, test_collections: Iterable[Collection],
                 allow_leakage: bool = False) -> list[str]:
    """``count`` English sentences from the train splits of ``sources`` in a seeded random order, none of them a
    test topic or a sentence of a test document of ``test_collections`` (unless ``allow_leakage``).

    Fewer come back when the sources hold fewer.
    """
    from clir_eval.collections.leakage import drop_test_text, evaluation_topics, test_documents

    if count <= 0:
        return []
    pool = english_sides(sources, "train")
    random.Random(f"{seed}-english").shuffle(pool)
    if allow_leakage:
        return pool[:count]
    collections = list(test_collections)
    topics, documents = evaluation_topics(collections, split="test"), test_documents(collections, split="test")
    # The substring scan of the test documents is the slow part: filter a little more than needed at a time.
    kept: list[str] = []
    for start in range(0, len(pool), count + 1000):
        kept += drop_test_text(pool[start : start + count + 1000], topics, documents)
        if len(kept) >= count:
            break
    return kept[:count]
