"""Load a tokenizer and transformer from a local directory, the local HF cache, or the hub.

Offline first: the local cache is tried before the network, and an unreachable hub gives
a clear error at once instead of transformers' retry loop (about a minute here).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlparse

logger = logging.getLogger(__name__)


class ModelNotAvailableError(RuntimeError):
    """A model id is neither local nor downloadable right now."""


@contextlib.contextmanager
def model_directory_errors(location: str | os.PathLike) -> Iterator[None]:
    """Turn what transformers, tokenizers and safetensors raise on a truncated, corrupt or unsupported model
    directory into one :class:`~clir_eval.io.InputFileError` naming the directory."""
    from safetensors import SafetensorError

    from clir_eval.io import InputFileError

    try:
        yield
    except InputFileError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as exc:
        lines = str(exc).strip().splitlines()
        reason = lines[0] if lines else type(exc).__name__
        raise InputFileError(location, None, f"cannot be loaded ({type(exc).__name__}: {reason}); is it "
                             "a complete, uncorrupted model or student directory?") from None


def _hub_reachable(timeout: float = 3.0) -> bool:
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.setdefaulttimeout(timeout)
        socket.getaddrinfo(host, 443)
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False
    finally:
        socket.setdefaulttimeout(None)


def _offline_mode() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("HF_HUB_OFFLINE", "CLIR_EVAL_OFFLINE"))


def load_transformer(location: str, **model_kwargs: Any) -> tuple[Any, Any]:
    """Return ``(tokenizer, model)`` for a local directory or hub id.

    Raises:
        ModelNotAvailableError: the id is not in the local cache and cannot be downloaded.
    """
    from transformers import AutoModel, AutoTokenizer

    if Path(location).is_dir():
        with model_directory_errors(location):
            return AutoTokenizer.from_pretrained(location), AutoModel.from_pretrained(location, **model_kwargs)
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, local_files_only=True)
        model = AutoModel.from_pretrained(location, local_files_only=True, **model_kwargs)
        return tokenizer, model
    except OSError:
        pass
    if _offline_mode() or not _hub_reachable():
        raise ModelNotAvailableError(
            f"model {location!r} is not a local directory, not in the Hugging Face cache, and the hub "
            "cannot be reached (offline). Use a built-in name (see `clir-eval models list`), a local path, "
            "or download it on a machine with network access first."
        )
    logger.info("downloading %s from the Hugging Face hub", location)
    return AutoTokenizer.from_pretrained(location), AutoModel.from_pretrained(location, **model_kwargs)
