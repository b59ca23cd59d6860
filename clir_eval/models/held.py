"""Sentence encoders held loaded for a study's runs: loaded once, not once per language, and alive together.

A study searches every language with the same query encoders. Loading a 118M-parameter student takes 1-2 s on
two cores and hashing its trunk (:mod:`clir_eval.models.trunk`) another 0.5-1 s; held for the whole study, each
costs that once. Being alive together also lets encoders share their frozen lower layers from the first
language on: an encoder stores its layers' states only where its chain meets a partner's (one alive, or seen
encoding before), so without this the first language's me5-small run stores nothing that ``student-init``
(the same backbone) and the students (its lower layers) could resume from.

:func:`holding` holds a list of models for the duration of a ``with`` block, as many as fit in a byte bound;
:func:`load_encoder` returns a held encoder, or loads the model as usual when it is not held.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Iterator
from typing import Any

logger = logging.getLogger(__name__)

HELD_ENV = "CLIR_EVAL_HELD_ENCODERS_MIB"
DEFAULT_HELD_MIB = 4096  # eight me5-small-sized students

_HELD: dict[str, Any] = {}


def held_bytes_bound() -> int:
    """The byte bound on held encoders' weights: ``$CLIR_EVAL_HELD_ENCODERS_MIB`` MiB (default 4096; 0 holds none)."""
    raw = os.environ.get(HELD_ENV, "").strip()
    try:
        mib = float(raw) if raw else DEFAULT_HELD_MIB
    except ValueError:
        raise ValueError(f"{HELD_ENV} must be a number of MiB, got {raw!r}") from None
    return max(0, int(mib * 2**20))


def weight_bytes(encoder: Any) -> int:
    """Bytes of an encoder's parameters and buffers."""
    return sum(t.numel() * t.element_size() for t in (*encoder.parameters(), *encoder.buffers()))


@contextlib.contextmanager
def holding(models: Iterable[str], max_bytes: int | None = None) -> Iterator[list[str]]:
    """Load ``models`` (names, directories or hub ids, in the order they will run) and hold them until the block
    ends; yields the names held. Models past the byte bound are not held (they load per use, as without this).
    """
    from clir_eval.models.sentence import SentenceEncoder

    bound = held_bytes_bound() if max_bytes is None else max_bytes
    added: list[str] = []
    used = sum(weight_bytes(encoder) for encoder in _HELD.values())
    try:
        for model in dict.fromkeys(models):
            if model in _HELD:
                continue
            encoder = SentenceEncoder.from_pretrained(model)
            size = weight_bytes(encoder)
            if used + size > bound:
                logger.info("not holding %s: %d MiB over the %d MiB bound ($%s)", model,
                            (used + size - bound) >> 20, bound >> 20, HELD_ENV)
                del encoder
                break  # later models would run later: holding them instead of this one helps no sharing
            _HELD[model] = encoder
            used += size
            added.append(model)
        yield added
    finally:
        for model in added:
            _HELD.pop(model, None)


def load_encoder(model: str) -> Any:
    """The held encoder of ``model``, else a freshly loaded :class:`~clir_eval.models.sentence.SentenceEncoder`."""
    encoder = _HELD.get(model)
    if encoder is not None:
        return encoder
    from clir_eval.models.sentence import SentenceEncoder

    return SentenceEncoder.from_pretrained(model)
