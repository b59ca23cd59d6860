"""Converters from the original public datasets to the committed built-in collections (maintainer tool)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

SOURCES = ("xquad-r", "ntrex", "lafand")


def build_builtin(source: str | os.PathLike, dest_root: str | os.PathLike | None = None) -> dict[str, dict]:
    """Convert ``source/{xquad-r,ntrex,lafand}`` into ``dest_root`` (default: the data root).

    ``lafand/`` gives two outputs: the ``lafand`` bitext and the ``lafand-x`` retrieval collection.

    Deterministic: the same sources give byte-identical files. Each output folder is built under a
    temporary name and swapped in whole, so a failed build leaves the previous data untouched.

    Returns:
        ``{source name: measured counts}``.
    """
    from clir_eval.collections.converters import lafand, lafand_x, ntrex, xquad_r
    from clir_eval.collections.registry import data_root
    from clir_eval.io import InputFileError

    source = Path(source)
    missing = [name for name in SOURCES if not (source / name).is_dir()]
    if missing:
        raise InputFileError(
            source, None, f"missing source folder(s): {', '.join(missing)} (expected {', '.join(SOURCES)})"
        )
    dest = Path(dest_root) if dest_root is not None else data_root()
    return {
        "xquad-r": xquad_r.convert(source / "xquad-r", dest),
        "ntrex": ntrex.convert(source / "ntrex", dest),
        "lafand": lafand.convert(source / "lafand", dest),
        "lafand-x": lafand_x.convert(source / "lafand", dest),
    }
