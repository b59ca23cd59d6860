"""Helpers shared by the converters: deterministic manifests, provenance hashes, text clean-up."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any, Mapping

from clir_eval.io import atomic_write, sha256_file

_LINE_BREAKS = re.compile(r"[\t\r\n\u2028\u2029\x0b\x0c\x85]+")


def one_line(text: str) -> str:
    """Strip, and turn tabs/line breaks into one space, so the text fits a TSV field (other spaces kept)."""
    return _LINE_BREAKS.sub(" ", text).strip()


def write_manifest(path: str | os.PathLike, data: Mapping[str, Any]) -> None:
    """Write YAML in the given key order, multi-line text as ``|`` blocks (byte-identical on every run)."""
    import yaml

    class _Dumper(yaml.SafeDumper):
        pass

    def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    _Dumper.add_representer(str, _str)
    text = yaml.dump(
        dict(data), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=120, default_flow_style=False
    )
    with atomic_write(path) as handle:
        handle.write(text)


def provenance(source_root: Path, files: list[Path]) -> dict[str, str]:
    """``{relative path: sha256}`` of the source files a collection was built from."""
    return {str(f.relative_to(source_root)): sha256_file(f) for f in sorted(files)}


def copy_file(source: Path, dest: Path) -> None:
    """Copy one file's bytes through an atomic write."""
    with atomic_write(dest, "wb") as handle, open(source, "rb") as src:
        shutil.copyfileobj(src, handle)


def relative(path: Path, start: Path) -> str:
    """``path`` relative to ``start`` with forward slashes (manifests are portable)."""
    return Path(os.path.relpath(path, start)).as_posix()


def read_source_lines(path: Path) -> list[str]:
    """Lines of a source text file (UTF-8; ``\\r\\n`` or ``\\n``), without line ends; errors name file and line."""
    from clir_eval.io import read_text_lines

    return [line for _, line in read_text_lines(path)]
