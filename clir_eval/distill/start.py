"""The student's start: which of its weights train, and its initial linear map into the teacher's space.

A student from another model than the teacher starts from a least-squares map of its pooled states onto
the teacher's embeddings (:func:`fit_projection`). The map is fitted on English text run through both
models, optionally joined with foreign -> English pairs. English-only text keeps what the backbone knows:
a multilingual backbone already puts a foreign sentence near its English translation, so a map that takes
its English states to the teacher's English embeddings carries the foreign ones along. A map fitted on a
few hundred foreign -> English pairs instead bends the space towards those pairs (measured in
docs/distillation.md).
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any, Sequence

import numpy as np

from clir_eval.collections.records import BitextPair
from clir_eval.distill.data import bitext_sha256

logger = logging.getLogger(__name__)


def transformer_layers(backbone: Any) -> Any:
    """The ModuleList of transformer blocks (the one whose length is num_hidden_layers)."""
    import torch

    count = int(backbone.config.num_hidden_layers)
    for _, module in backbone.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == count:
            return module
    raise ValueError(f"cannot find the {count} transformer layers of {type(backbone).__name__} to freeze")


def freeze(student: Any, *, embeddings: bool, layers: int, dropout: bool, projection: bool = False) -> None:
    """Freeze the embedding module and the lowest ``layers`` blocks (and the map into the teacher's space with
    ``projection``); ``dropout=False`` zeroes every dropout.

    Frozen modules get no gradient, no optimizer state and no dropout: they compute what they compute at
    inference, so their output for a sentence is the same at every step and can be computed once (the shared
    trunk of :mod:`clir_eval.distill.data`).
    """
    import torch

    frozen: list[Any] = []
    if embeddings:
        student.backbone.get_input_embeddings().weight.requires_grad_(False)
        module = getattr(student.backbone, "embeddings", None)
        if isinstance(module, torch.nn.Module):
            module.requires_grad_(False)
            frozen.append(module)
    pooler = getattr(student.backbone, "pooler", None)
    if isinstance(pooler, torch.nn.Module):
        # BERT's pooler head is never used (the encoder pools itself): no gradient, no optimizer
        # state, and DDP must not wait for its gradients.
        pooler.requires_grad_(False)
    if layers:
        blocks = transformer_layers(student.backbone)
        if layers > len(blocks):
            raise ValueError(f"freeze_layers={layers} but the student has {len(blocks)} layers")
        for block in blocks[:layers]:
            block.requires_grad_(False)
            frozen.append(block)
    if projection and student.projection is not None:
        student.projection.requires_grad_(False)
    for root in [student] if not dropout else frozen:
        for module in root.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0  # BERT-style attention reads dropout.p, so this also disables attention dropout


def wants_projection(mode: str, student_name: str, teacher_name: str, student: Any, teacher: Any) -> bool:
    """Whether the student needs a new map into the teacher's space (``mode``: auto, always, never)."""
    if student.projection is not None or mode == "never":
        return False  # a saved student keeps its projection; "never" leaves size mismatches to match_dimensions
    if mode == "always" or student.dim != teacher.dim:
        return True
    from clir_eval.models.registry import resolve_model

    return resolve_model(student_name).local_path() != resolve_model(teacher_name).local_path()


def pooled_states(student: Any, texts: Sequence[str], max_length: int, batch_size: int = 64) -> Any:
    """The student's pooled backbone states (before any projection or normalisation), float64 ``(n, hidden)``.

    Texts get the student's query prefix: the map serves queries. Batches are length-sorted (little padding)
    and padded to multiples of 8 like the trainer's; rows come back in input order.
    """
    import torch

    from clir_eval.models.pooling import pool

    if not texts:
        return torch.zeros((0, student.hidden_size), dtype=torch.float64)
    prefix = student.config.query_prefix
    encoded = student.tokenizer([prefix + t for t in texts] if prefix else list(texts), truncation=True,
                                max_length=max_length)
    order = np.argsort([len(ids) for ids in encoded["input_ids"]], kind="stable")
    out = torch.empty((len(texts), student.hidden_size), dtype=torch.float64)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = student.tokenizer.pad({k: [encoded[k][i] for i in idx] for k in encoded.keys()},
                                          pad_to_multiple_of=8, return_tensors="pt")
            features = student.model_inputs(batch)
            states = student.backbone(**features, return_dict=True).last_hidden_state
            out[torch.as_tensor(idx)] = pool(states, features["attention_mask"], student.config.pooling).double().cpu()
    return out


# Least-squares maps already fitted in this process, by everything the fit reads. A study distils several
# students (KD, OT, contrastive, ...) from one backbone on the same text: their fits are equal, and each
# costs a forward pass of both models over the fit text.
_FITTED: dict[str, Any] = {}


def fit_projection(student: Any, teacher: Any, pairs: Sequence[BitextPair], max_length: int,
                   english: Sequence[str] = (), ridge: float = 1e-3, batch_size: int = 64) -> dict[str, float]:
    """Set ``student.projection`` to the ridge least-squares map ``W = argmin |X W - T|^2 + r |W|^2``.

    X stacks the student's pooled states of the foreign sides of ``pairs`` and of the ``english`` sentences;
    T stacks the teacher's embeddings of the pairs' English sides and of the same ``english`` sentences.
    ``r`` is ``ridge`` times the mean diagonal of ``X^T X``. Pooling is linear, so the map applies to token
    states as well.

    Returns:
        ``{"fit_pairs", "fit_english", "residual"}``: the mean squared residual per row.
    """
    import torch

    if not pairs and not english:
        raise ValueError("the projection fit needs bitext pairs or English sentences")
    from clir_eval.models.trunk import module_digest  # memoised per module: each model is hashed once

    key = json.dumps([module_digest(student.backbone), module_digest(teacher), bitext_sha256(pairs),
                      hashlib.sha256("\n".join(english).encode("utf-8")).hexdigest(), max_length, ridge,
                      student.config.to_dict(), teacher.config.to_dict()], sort_keys=True, default=str)
    if key in _FITTED:
        weights, info = _FITTED[key]
        with torch.no_grad():
            student.projection.weight.copy_(weights)
        logger.info("projection %d -> %d: least-squares fit reused (same models and text)", student.hidden_size,
                    student.dim)
        return dict(info)

    sources = [p.source for p in pairs] + list(english)
    targets = [p.target for p in pairs] + list(english)
    x = pooled_states(student, sources, max_length, batch_size)
    t = torch.from_numpy(teacher.encode(targets, role="query", batch_size=batch_size)).double()
    gram = x.T @ x
    weights = torch.linalg.solve(gram + ridge * gram.diagonal().mean() * torch.eye(x.shape[1], dtype=x.dtype),
                                 x.T @ t)
    with torch.no_grad():
        student.projection.weight.copy_(weights.T.to(student.projection.weight.dtype))
    info = {"fit_pairs": float(len(pairs)), "fit_english": float(len(english)),
            "residual": float(((x @ weights - t) ** 2).sum(dim=1).mean())}
    _FITTED[key] = (student.projection.weight.detach().clone(), info)
    logger.info("projection %d -> %d fitted by least squares on %d pairs and %d English sentences "
                "(mean squared residual %.4f)", x.shape[1], t.shape[1], len(pairs), len(english), info["residual"])
    return dict(info)
