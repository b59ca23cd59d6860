"""Bitext filtering: drop pairs whose two sides the student's own backbone does not see as translations.

Web and news bitext holds misaligned lines: in the LAFAND ha train split about one pair in seven has its English
side more than ten places down me5-small's ranking of 300 candidates (docs/distillation.md). KD regresses the
foreign sentence onto the teacher's embedding of a wrong English sentence, so such pairs teach noise. The score
is the ratio margin of Artetxe & Schwenk (2019, "Margin-based Parallel Corpus Mining with Multilingual Sentence
Embeddings"): the pair's cosine over the mean cosine of each side's k nearest neighbours on the other side. It
is written here because no maintained library exposes it as a function (LASER and sentence-transformers ship it
only as example scripts); it is a few lines of numpy.
"""

from __future__ import annotations

import random
from typing import Callable, Sequence

import numpy as np

from clir_eval.collections.records import BitextPair

#: Neighbours per side in the margin's denominator (Artetxe & Schwenk use 4).
MARGIN_NEIGHBOURS = 4
#: Candidates scored together when there is no budget (all of a language's pairs): a margin is relative to its
#: candidate set, and one set of 30,000 pairs would need a 30,000 x 30,000 similarity matrix.
UNBUDGETED_WINDOW = 1000

Embed = Callable[[list[str]], np.ndarray]


def check_min_margin(value: float) -> None:
    """Raise ValueError unless ``value`` is a usable ratio-margin threshold: in (0, 2)."""
    if not 0 < value < 2:
        raise ValueError(f"min_margin must be in (0, 2) (a ratio margin; 1.0 keeps pairs closer than their sides' "
                         f"neighbours), got {value}")


def ratio_margin(source: np.ndarray, target: np.ndarray, k: int = MARGIN_NEIGHBOURS,
                 source_pool: np.ndarray | None = None, target_pool: np.ndarray | None = None) -> np.ndarray:
    """The ratio margin of each aligned row pair ``(source[i], target[i])``.

    ``cos(x, y) / ((mean of x's k best cosines in target_pool + mean of y's k best in source_pool) / 2)``; the
    pools default to the candidates themselves. Above 1 the pair is closer than the two sides' usual neighbours.
    Rows need not be normalised.
    """
    if source.shape != target.shape or source.ndim != 2:
        raise ValueError(f"source and target must be aligned (n, dim) arrays, got {source.shape} and {target.shape}")
    if len(source) == 0:
        return np.zeros(0, dtype=np.float64)

    def unit(x: np.ndarray) -> np.ndarray:
        x = x.astype(np.float64)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    a, b = unit(source), unit(target)
    a_pool = a if source_pool is None else unit(source_pool)
    b_pool = b if target_pool is None else unit(target_pool)
    # The k best per side (the pair itself included, as in the paper's candidate scoring).
    forward = np.sort(a @ b_pool.T, axis=1)[:, -min(k, len(b_pool)):].mean(axis=1)
    backward = np.sort(b @ a_pool.T, axis=1)[:, -min(k, len(a_pool)):].mean(axis=1)
    return np.einsum("ij,ij->i", a, b) / ((forward + backward) / 2)


def margin_scores(pairs: Sequence[BitextPair], embed: Embed, k: int = MARGIN_NEIGHBOURS) -> np.ndarray:
    """:func:`ratio_margin` of ``pairs`` as one candidate set, both sides embedded by ``embed``."""
    pairs = list(pairs)
    if not pairs:
        return np.zeros(0, dtype=np.float64)
    return ratio_margin(embed([p.source for p in pairs]), embed([p.target for p in pairs]), k)


def filtered_sample(pairs: Sequence[BitextPair], budget: int | None, min_margin: float, embed: Embed,
                    seed: str) -> tuple[list[BitextPair], dict[str, float]]:
    """Up to ``budget`` pairs whose margin is at least ``min_margin``, and the margin of every pair scored.

    The first candidates are exactly the unfiltered sample (``random.Random(seed).sample(pairs, budget)``), scored
    among themselves, so a filtered student reads that sample minus its dropped pairs. The shortfall is then
    topped up from the rest in a seeded order, a few more candidates than the drop rate so far predicts at a time,
    each scored against every candidate scored before it (the neighbourhood never shrinks below the sample). It
    stops when the budget is met or the pairs run out. ``budget`` None keeps every pair that passes, scoring them
    in sets of ``UNBUDGETED_WINDOW`` in file order.
    """
    pairs = list(pairs)
    kept: list[BitextPair] = []
    scores: dict[str, float] = {}
    if budget is None:
        for start in range(0, len(pairs), UNBUDGETED_WINDOW):
            window = pairs[start : start + UNBUDGETED_WINDOW]
            for pair, margin in zip(window, margin_scores(window, embed)):
                scores[pair.pair_id] = float(margin)
                if margin >= min_margin:
                    kept.append(pair)
        return kept, scores
    if budget >= len(pairs):
        first, rest = pairs, []
    else:
        first = random.Random(seed).sample(pairs, budget)
        chosen = {id(p) for p in first}
        rest = [p for p in pairs if id(p) not in chosen]
        random.Random(f"{seed}-rest").shuffle(rest)
    sources: list[np.ndarray] = []  # every candidate scored so far: the refills' neighbourhood
    targets: list[np.ndarray] = []
    window, position = first, 0
    while window:
        sources.append(np.asarray(embed([p.source for p in window])))
        targets.append(np.asarray(embed([p.target for p in window])))
        margins = ratio_margin(sources[-1], targets[-1], source_pool=np.concatenate(sources),
                               target_pool=np.concatenate(targets))
        for pair, margin in zip(window, margins):
            scores[pair.pair_id] = float(margin)
            if margin >= min_margin and len(kept) < budget:
                kept.append(pair)
        if len(kept) >= budget or position >= len(rest):
            break
        keep_rate = max(len(kept) / len(scores), 0.05)
        size = int(np.ceil((budget - len(kept)) / keep_rate * 1.2)) + 8
        window, position = rest[position : position + size], position + size
    return kept, scores
