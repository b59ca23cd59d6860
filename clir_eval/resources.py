"""Where the files shipped with the package live: the built-in collections, the regression specs, the study configs.

They are package data under ``clir_eval/data/``, found through :mod:`importlib.resources`, so an installed wheel
finds them as an editable checkout does. In the repository, ``clir_eval/data/<folder>`` is a symlink to the folder
of the same name at the root (``collections/``, ``topics/``, ``qrels/``, ``regressions/``, ``configs/``): those
are the one source of truth, kept where users look for them, and a wheel build copies the files the links point to.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def package_data_dir() -> Path:
    """``clir_eval/data`` of the installed package, as a directory on disk.

    Raises:
        FileNotFoundError: the package is not installed as plain files (e.g. imported from a zip archive), or the
            folder is missing (a checkout without its symlinks, e.g. on a filesystem that does not keep them).
    """
    root = files("clir_eval").joinpath("data")
    if not isinstance(root, Path):  # a zip import: Pyserini, Faiss and the readers need real paths
        raise FileNotFoundError(2, "the clir_eval package data is not a directory on disk (zip import?); install "
                                   "the package from a wheel or set CLIR_EVAL_DATA", str(root))
    if not root.is_dir():
        raise FileNotFoundError(2, "no package data folder (a checkout keeps clir_eval/data/* as symlinks to the "
                                   "repository root's folders; set CLIR_EVAL_DATA to a folder with collections/)",
                                str(root))
    return root

