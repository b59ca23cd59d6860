"""A transformer turned sentence encoder: tokenize with role prefixes, pool, project, normalise.

This is the torch-level model that teachers and students share (sentence-transformers' module
pipeline, reduced to what CLIR distillation needs). Pyserini adapters wrap it in
``clir_eval.models.pyserini_adapters``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from clir_eval.io import atomic_directory
from clir_eval.models.loading import load_transformer
from clir_eval.models.pooling import pool
from clir_eval.models.registry import ENCODER_CONFIG_NAME, EncoderConfig, ModelSpec, resolve_model
from clir_eval.models.trunk import plan as trunk_plan
from clir_eval.models.trunk import register as register_trunk

logger = logging.getLogger(__name__)

Role = Literal["query", "passage"]
ROLES = ("query", "passage")
PROJECTION_FILE = "projection.safetensors"
#: Padded tokens a CPU batch holds at most. A batch's largest activation (tokens x FFN width, 25 MB for MiniLM at
#: 4,096 tokens) then stays in the CPU's last-level cache: 64 passages of 256 tokens (100 MB) made the element-wise
#: layers (GELU, adds, copies) memory-bound, 2-10x slower per element (docs/benchmarks.md, encoding speed).
CPU_BATCH_TOKENS = 4096
#: Padded lengths are rounded up to a multiple of this: few distinct shapes, so CPU kernels (oneDNN) reuse their
#: prepared primitives instead of re-creating them for every batch (several times faster).
PAD_MULTIPLE = 8


def _position_limit(config: Any) -> int | None:
    """Longest input the position table allows: RoBERTa/XLM-R reserve ``padding_idx + 1`` rows."""
    positions = getattr(config, "max_position_embeddings", None)
    if not positions:
        return None
    if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert", "xlm-roberta-xl"):
        return int(positions) - int(getattr(config, "pad_token_id", 1)) - 1
    return int(positions)


def _check_finite(location: str, backbone: nn.Module, projection: nn.Module | None) -> None:
    """Refuse weights holding NaN or inf (a diverged training): such a model embeds every text as NaN, and a
    search with it finds nothing, which would read as a score of 0."""
    from clir_eval.io import InputFileError

    parts = [("", backbone)] + ([("projection.", projection)] if projection is not None else [])
    for prefix, module in parts:
        for name, tensor in module.state_dict().items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise InputFileError(location, None, f"the weights are not finite (nan or inf in {prefix}{name}); "
                                     "the model cannot be used (a diverged training?)")


def _length_batches(lengths: list[int], batch_size: int, batch_tokens: int | None) -> list[tuple[int, int]]:
    """``(start, stop)`` spans over texts sorted longest first: at most ``batch_size`` texts, and at most
    ``batch_tokens`` padded tokens unless a single text is longer than that."""
    if batch_size < 1 or (batch_tokens is not None and batch_tokens < 1):
        raise ValueError(f"batch_size and batch_tokens must be >= 1, got {batch_size} and {batch_tokens}")
    spans, start = [], 0
    while start < len(lengths):
        size = batch_size
        if batch_tokens is not None:  # the first text is the batch's longest: it sets the padded length
            padded = -(-lengths[start] // PAD_MULTIPLE) * PAD_MULTIPLE
            size = max(1, min(batch_size, batch_tokens // padded))
        spans.append((start, min(start + size, len(lengths))))
        start += size
    return spans


class SentenceEncoder(nn.Module):
    """Backbone + pooling + optional linear projection + optional L2 normalisation.

    Args:
        backbone: a transformers model returning ``last_hidden_state``.
        tokenizer: its (fast) tokenizer.
        config: pooling, normalisation, prefixes and max length.
        projection: optional ``nn.Linear`` applied to token states (so token-level losses and
            the pooled embedding live in the same space); students get one when their hidden
            size differs from the teacher's.
        name: where the model came from, recorded when saved.
    """

    def __init__(
        self,
        backbone: nn.Module,
        tokenizer: Any,
        config: EncoderConfig,
        projection: nn.Linear | None = None,
        name: str = "",
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.config = config
        self.projection = projection
        self.name = name
        register_trunk(self)  # encoders alive together may share their frozen lower layers (models.trunk)

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls, name_or_path: str | ModelSpec, encoder: EncoderConfig | None = None, device: str | None = None
    ) -> "SentenceEncoder":
        """Load a built-in name, a saved student, a local model directory or a hub id."""
        spec = name_or_path if isinstance(name_or_path, ModelSpec) else resolve_model(name_or_path, encoder)
        location = spec.local_path()
        tokenizer, backbone = load_transformer(location)
        projection = None
        proj_file = Path(location) / PROJECTION_FILE
        if proj_file.is_file():
            from safetensors.torch import load_file

            from clir_eval.models.loading import model_directory_errors

            with model_directory_errors(proj_file):
                weights = load_file(str(proj_file))
                out_dim, in_dim = weights["weight"].shape
                projection = nn.Linear(in_dim, out_dim, bias="bias" in weights)
                projection.load_state_dict(weights)
        _check_finite(location, backbone, projection)
        encoder_config = spec.encoder
        limit = _position_limit(backbone.config)
        if limit is not None and encoder_config.max_length > limit:
            # A configured length beyond the position table would crash at the first long text.
            logger.info("%s: max_length %d capped to the model's %d positions", spec.name, encoder_config.max_length,
                        limit)
            encoder_config = replace(encoder_config, max_length=limit)
        model = cls(backbone, tokenizer, encoder_config, projection=projection, name=spec.name)
        model.eval()  # like transformers' from_pretrained: trainers switch to train mode explicitly
        if device is not None:
            model.to(device)
        return model

    def add_projection(self, out_dim: int, seed: int = 0) -> nn.Linear:
        """Attach a learned linear map hidden_size -> out_dim (identity-initialised when square)."""
        in_dim = self.hidden_size
        generator = torch.Generator().manual_seed(seed)
        layer = nn.Linear(in_dim, out_dim, bias=False)
        with torch.no_grad():
            if in_dim == out_dim:
                layer.weight.copy_(torch.eye(in_dim))
            else:
                layer.weight.copy_(torch.randn(out_dim, in_dim, generator=generator) / in_dim**0.5)
        self.projection = layer.to(self.device)
        return layer

    # -- properties ---------------------------------------------------------------------------
    @property
    def hidden_size(self) -> int:
        return int(self.backbone.config.hidden_size)

    @property
    def dim(self) -> int:
        """Dimension of the sentence embedding (after projection)."""
        return self.projection.out_features if self.projection is not None else self.hidden_size

    @property
    def device(self) -> torch.device:
        return next(self.backbone.parameters()).device

    # -- tokenisation and forward ---------------------------------------------------------------
    def _prefixed(self, texts: list[str], role: Role) -> list[str]:
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}")
        prefix = self.config.query_prefix if role == "query" else self.config.passage_prefix
        return [prefix + t for t in texts] if prefix else list(texts)

    def tokenize(self, texts: list[str], role: Role = "query") -> dict[str, torch.Tensor]:
        """Padded features: ``input_ids``, ``attention_mask``, ``special_tokens_mask`` (and type ids if used)."""
        return dict(
            self.tokenizer(
                self._prefixed(list(texts), role),
                padding=True,
                truncation=True,
                max_length=self.config.max_length,
                return_tensors="pt",
                return_special_tokens_mask=True,
            )
        )

    def forward(self, features: dict[str, torch.Tensor], output_layer: int | None = None) -> dict[str, torch.Tensor]:
        """Encode tokenised features.

        Args:
            features: from :meth:`tokenize` (moved to this model's device here); may carry ``trunk_states``
                ``(b, L, hidden)`` and ``trunk_depth``: the hidden states after the lowest ``trunk_depth``
                layers, which are then not run again.
            output_layer: take token states from this hidden layer (``hidden_states`` index,
                0 = embeddings) instead of the last one; the sentence embedding always comes
                from the last layer.

        Returns:
            ``token_embeddings`` (b, L, d), ``attention_mask`` (b, L), ``special_tokens_mask``
            (b, L) when given, and ``sentence_embedding`` (b, d), L2-normalised if configured.
        """
        model_inputs = self.model_inputs(features)
        trunk = features.get("trunk_states")
        if trunk is None:
            outputs = self.backbone(**model_inputs, output_hidden_states=output_layer is not None, return_dict=True)
            depth = 0
        else:  # the frozen lower layers' states, computed once (clir_eval.distill.data.TrunkStates)
            from clir_eval.models.trunk import resume

            depth = int(features["trunk_depth"])
            if output_layer is not None and output_layer < depth:
                raise ValueError(f"output_layer {output_layer} lies inside the precomputed trunk (depth {depth})")
            outputs = resume(self.backbone, depth, trunk.to(self.device), model_inputs,
                             output_hidden_states=output_layer is not None)
        last = outputs.last_hidden_state
        tokens = outputs.hidden_states[output_layer - depth] if output_layer is not None else last
        if self.projection is not None:
            last = self.projection(last)
            tokens = self.projection(tokens) if output_layer is not None else last
        mask = model_inputs["attention_mask"]
        sentence = self._sentence_embedding(last, mask)
        result = {"token_embeddings": tokens, "attention_mask": mask, "sentence_embedding": sentence}
        if "special_tokens_mask" in features:
            result["special_tokens_mask"] = features["special_tokens_mask"].to(mask.device)
        return result

    def model_inputs(self, features: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The backbone's own inputs among tokenised ``features`` (ids, mask, token types), on this model's device."""
        device = self.device
        return {k: v.to(device) for k, v in features.items() if k in ("input_ids", "attention_mask", "token_type_ids")}

    def _sentence_embedding(self, projected: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Pool (projected) last-layer token states ``(b, L, d)`` into ``(b, d)``, normalised if configured."""
        sentence = pool(projected, mask, self.config.pooling)
        if self.config.normalize:
            sentence = nn.functional.normalize(sentence, p=2, dim=-1)
        return sentence

    # -- inference ------------------------------------------------------------------------------
    @torch.inference_mode()
    def encode(
        self, texts: list[str], role: Role = "query", batch_size: int = 32, show_progress: bool = False,
        batch_tokens: int | None = None, runner: Any = None,
    ) -> np.ndarray:
        """Embed texts in length-sorted batches (little padding); returns float32 ``(n, dim)`` in input order.

        A batch holds at most ``batch_size`` texts and at most ``batch_tokens`` padded tokens (default: on a CPU
        :data:`CPU_BATCH_TOKENS`, elsewhere no cap), so batches of long texts hold fewer of them.

        ``runner`` runs the backbone on a padded batch instead of torch (``last_hidden_state(inputs)``, and
        ``streams``: how many batches it runs at once, from as many threads), e.g.
        :class:`~clir_eval.models.openvino_backbone.OpenVINOBackbone`.

        Only one batch of token states per stream is alive at a time. Encoders alive in this process (or seen
        encoding before) whose lower layers are identical to this one's share those layers' states
        through :mod:`clir_eval.models.trunk`: the results are byte-identical to a separate run.
        """
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        encoded = self.tokenizer(
            self._prefixed(texts, role), truncation=True, max_length=self.config.max_length, padding=False
        )
        order = np.argsort([-len(ids) for ids in encoded["input_ids"]], kind="stable")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        was_training = self.training
        self.eval()
        if batch_tokens is None and self.device.type == "cpu":
            batch_tokens = CPU_BATCH_TOKENS
        batches = _length_batches([len(encoded["input_ids"][i]) for i in order], batch_size, batch_tokens)
        try:
            if runner is None:
                runner = trunk_plan(self)  # after eval(): dropout off is what makes states shareable
            streams = max(1, min(int(getattr(runner, "streams", 1)), len(batches)))

            def encode_batch(span: tuple[int, int]) -> None:
                with torch.inference_mode():  # thread-local: a stream's thread needs its own
                    idx = order[span[0]:span[1]]
                    batch = self.tokenizer.pad(
                        {k: [encoded[k][i] for i in idx] for k in encoded.keys()}, return_tensors="pt",
                        pad_to_multiple_of=PAD_MULTIPLE,
                    )
                    inputs = self.model_inputs(dict(batch))
                    last = runner.last_hidden_state(inputs)
                    if self.projection is not None:
                        last = self.projection(last)
                    emb = self._sentence_embedding(last, inputs["attention_mask"])
                    out[idx] = emb.float().cpu().numpy()

            pool = ThreadPoolExecutor(streams, thread_name_prefix="encode") if streams > 1 else None
            try:
                done = pool.map(encode_batch, batches) if pool is not None else map(encode_batch, batches)
                if show_progress:
                    from rich.progress import track

                    done = track(done, total=len(batches), description=f"encoding {len(texts)} {role} texts",
                                 transient=True)
                for _ in done:
                    pass
            finally:
                if pool is not None:
                    pool.shutdown(cancel_futures=True)  # after a failed batch, the ones not started are dropped
        finally:
            self.train(was_training)
        return out

    # -- persistence ----------------------------------------------------------------------------
    def save(self, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Save weights, tokenizer, encoder config and projection as a directory (atomically).

        ``extra`` is stored under ``"extra"`` in ``clir_eval_encoder.json`` (e.g. training provenance).
        """
        path = Path(path)
        with atomic_directory(path) as tmp:
            self.backbone.save_pretrained(tmp)
            self.tokenizer.save_pretrained(tmp)
            if self.projection is not None:
                from safetensors.torch import save_file

                save_file({k: v.detach().cpu().contiguous() for k, v in self.projection.state_dict().items()},
                          str(tmp / PROJECTION_FILE))
            meta = {"encoder": self.config.to_dict(), "base_model": self.name, "extra": extra or {}}
            (tmp / ENCODER_CONFIG_NAME).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", "utf-8")
        return path
