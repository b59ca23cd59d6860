"""Where converted and downloaded models are cached on this machine."""

from __future__ import annotations

import os
from pathlib import Path


def model_cache_dir() -> Path:
    """The folder for cached models: ``<cache root>/models``.

    The cache root is ``$CLIR_EVAL_CACHE`` when set, else ``$XDG_CACHE_HOME/clir-eval`` (an absolute
    ``XDG_CACHE_HOME`` only, as the XDG spec asks), else ``~/.cache/clir-eval``. Nothing is created.
    """
    explicit = os.environ.get("CLIR_EVAL_CACHE")
    if explicit:
        root = Path(explicit).expanduser().absolute()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
        root = base / "clir-eval"
    return root / "models"
