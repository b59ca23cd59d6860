"""Pyserini-shaped encoders (duck-typed, as ``pyserini.encode._base`` defines the roles).

``QueryEncoder.encode(query) -> (d,)`` and ``encode_batch(queries) -> (n, d)`` plug into
``FaissSearcher.search``/``batch_search``; ``DocumentEncoder.encode(texts, titles=None) -> (n, d)``
fits Pyserini's encoding loop. Importing this module does not import pyserini or start Java.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from clir_eval.models.held import load_encoder
from clir_eval.models.sentence import SentenceEncoder

if TYPE_CHECKING:
    from clir_eval.models.openvino_backbone import OpenVINOBackbone


def _as_encoder(model: SentenceEncoder | str, device: str | None) -> SentenceEncoder:
    if isinstance(model, SentenceEncoder):
        return model
    if device is None:  # a study's runner may hold it loaded already (models.held)
        return load_encoder(model)
    return SentenceEncoder.from_pretrained(model, device=device)


class QueryEncoder:
    """Any sentence encoder (teacher or student) as a Pyserini query encoder."""

    def __init__(self, model: SentenceEncoder | str, batch_size: int = 64, device: str | None = None) -> None:
        self.model = _as_encoder(model, device)
        self.batch_size = batch_size

    def encode(self, query: str, **kwargs: Any) -> np.ndarray:
        """One query -> float32 ``(d,)``."""
        return self.model.encode([query], role="query", batch_size=1)[0]

    def encode_batch(self, queries: list[str], show_progress: bool = False) -> np.ndarray:
        """Queries -> float32 ``(n, d)``, length-bucketed."""
        return self.model.encode(queries, role="query", batch_size=self.batch_size, show_progress=show_progress)


#: ``--precision`` names and the torch dtypes the weights are cast to for inference.
PRECISIONS = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


class DocumentEncoder:
    """A sentence encoder as a Pyserini document encoder (titles, when given, are prepended).

    ``precision`` ``bf16``/``fp16`` casts the weights for inference (GPUs; a CPU without native bf16 emulates it
    slowly); embeddings come back as float32 either way. ``batch_tokens`` caps a batch's padded tokens (None: the
    encoder's default for its device, :data:`~clir_eval.models.sentence.CPU_BATCH_TOKENS` on a CPU). ``backend``
    ``openvino`` runs the backbone through OpenVINO (CPU, fp32; :mod:`clir_eval.models.openvino_backbone`) on
    ``threads`` threads (None: all cores).
    """

    def __init__(self, model: SentenceEncoder | str, batch_size: int = 64, device: str | None = None,
                 precision: str = "fp32", batch_tokens: int | None = None, backend: str = "torch",
                 threads: int | None = None) -> None:
        from clir_eval.models.openvino_backbone import check_backend, openvino_missing

        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        check_backend(backend)
        if backend == "openvino" and (precision != "fp32" or (device or "cpu") != "cpu"):
            raise ValueError(f"the openvino backend runs on a CPU in fp32, not on {device or 'cpu'} in {precision}")
        missing = openvino_missing() if backend == "openvino" else None
        if missing:
            raise ValueError(missing)
        self.model = _as_encoder(model, device)
        if backend == "openvino" and self.model.device.type != "cpu":  # an encoder passed in may sit on a GPU
            raise ValueError(f"the openvino backend runs on a CPU in fp32, not on {self.model.device} in {precision}")
        if precision != "fp32":
            import torch

            self.model.to(getattr(torch, PRECISIONS[precision]))
        self.batch_size = batch_size
        self.batch_tokens = batch_tokens
        self.backend = backend
        self._threads = threads
        self._runner: OpenVINOBackbone | None = None

    @property
    def runner(self) -> Any:
        """What runs the backbone (None: torch). OpenVINO converts the model on first use, not here: a study
        makes a document encoder for an index it may then find already built."""
        if self.backend == "openvino" and self._runner is None:
            from clir_eval.models.openvino_backbone import OpenVINOBackbone

            self._runner = OpenVINOBackbone(self.model, self._threads)
        return self._runner

    def encode(self, texts: list[str], titles: list[str] | None = None, **kwargs: Any) -> np.ndarray:
        """Documents -> float32 ``(n, d)``."""
        if titles is not None:
            texts = [f"{t} {x}".strip() for t, x in zip(titles, texts, strict=True)]
        return self.model.encode(list(texts), role="passage", batch_size=self.batch_size,
                                 batch_tokens=self.batch_tokens, runner=self.runner,
                                 show_progress=bool(kwargs.get("show_progress", False)))
