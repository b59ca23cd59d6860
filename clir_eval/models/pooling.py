"""Pooling token states into one vector per text (the one place pooling is implemented)."""

from __future__ import annotations

import torch

from clir_eval.models.registry import POOLING_MODES


def pool(token_embeddings: torch.Tensor, attention_mask: torch.Tensor, mode: str) -> torch.Tensor:
    """Pool ``(b, L, h)`` token states with a ``(b, L)`` mask into ``(b, h)``.

    ``mean`` averages the unmasked tokens (special tokens included, as sentence-transformers
    does); ``cls`` takes the first token.
    """
    if mode == "mean":
        mask = attention_mask.unsqueeze(-1).to(token_embeddings.dtype)
        return (token_embeddings * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
    if mode == "cls":
        return token_embeddings[:, 0]
    raise ValueError(f"pooling must be one of {POOLING_MODES}, got {mode!r}")
