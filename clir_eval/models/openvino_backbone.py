"""A sentence encoder's backbone compiled by OpenVINO for the CPU (opt-in: ``index dense --backend openvino``).

OpenVINO fuses a transformer's element-wise layers into its matrix products and, under its ``THROUGHPUT`` hint,
runs several batches at once, each stream on its own cores. Torch's eager CPU path can do neither: its attention,
GELU and copies take a quarter of the time and scale poorly over threads. The batches, the pooling and the
projection stay :class:`~clir_eval.models.sentence.SentenceEncoder`'s; only the backbone's forward moves, in float32,
so the vectors equal torch's to float32 rounding (docs/benchmarks.md, encoding speed).
"""

from __future__ import annotations

import threading
import warnings
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

# Configs name a backend (retrieval.dense.DenseIndexConfig); checking the name must not import torch.
BACKENDS = ("torch", "openvino")
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def check_backend(backend: str) -> None:
    """Raise ``ValueError`` unless ``backend`` names one of :data:`BACKENDS`."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")


def openvino_missing() -> str | None:
    """Why the openvino backend cannot run here, or None when it can."""
    import importlib.util

    if importlib.util.find_spec("openvino") is None:
        return "the openvino backend needs the openvino package: pip install 'clir-eval[openvino]'"
    return None


class OpenVINOBackbone:
    """``last_hidden_state(inputs)`` of an encoder's backbone, run by OpenVINO on the CPU; ``streams`` batches may
    run at once (from as many threads: each thread gets its own inference request)."""

    def __init__(self, encoder: Any, threads: int | None = None) -> None:
        import openvino as ov
        import torch
        from transformers.utils import logging as transformers_logging

        example = encoder.model_inputs(dict(encoder.tokenize(["an example", "a second, longer example"], "passage")))
        self._names = [name for name in _INPUTS if name in example]
        verbosity = transformers_logging.get_verbosity()
        transformers_logging.set_verbosity_error()  # tracing reads deprecated attributes: notices for no one here
        try:
            with torch.inference_mode(), warnings.catch_warnings():
                # The tracer warns that the mask's padding test and the causal flag become constants: they are, for
                # an encoder (its mask always spans its inputs; it is never causal). The example is padded, so the
                # masked path is the one traced.
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                warnings.simplefilter("ignore", FutureWarning)
                warnings.simplefilter("ignore", DeprecationWarning)  # torch on jit.trace, which the conversion calls
                model = ov.convert_model(encoder.backbone, example_input={k: example[k] for k in self._names})
        finally:
            transformers_logging.set_verbosity(verbosity)
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "THROUGHPUT"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self.compiled = ov.Core().compile_model(model, "CPU", config)
        self._output = self.compiled.output(0)  # BERT-shaped models return last_hidden_state first
        self.streams = int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        self._local = threading.local()
        self._from_numpy = torch.from_numpy

    def last_hidden_state(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        result = request.infer({name: inputs[name].numpy() for name in self._names})
        return self._from_numpy(result[self._output].copy())  # the request reuses its output buffer
