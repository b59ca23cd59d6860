"""Find the runs of a results directory: ``manifest.json``'s ``runs`` list when present, else the layout.

Layout (the runner writes it; without a manifest ``runs`` list it is scanned)::

    RESULTS_DIR/manifest.json                                optional, see below
    RESULTS_DIR/runs/<collection>/<lang>/<system>.run        TREC run files (.run, .trec, .run.gz, .trec.gz)
    RESULTS_DIR/runs/<collection>/<lang>/qrels.txt           qrels of that language, or
    RESULTS_DIR/runs/<collection>/qrels.txt                  qrels shared by the collection's languages
                                                             (any folder between the run and RESULTS_DIR)

For older result folders without ``runs/``, ``RESULTS_DIR/<collection>/<lang>/<system>.run`` is scanned.

``manifest.json`` fields read (all optional; unknown fields are ignored)::

    title, created, git_commit, command                 shown in the report header (command: str or argv list)
    metrics: [str]                                      metrics to report (ranx names, first = primary)
    baselines: [str]                                    systems the others are tested against
    oracle: str                                         reference system of the gap analysis
    upper_bounds: [str]                                 systems never set in bold (oracles; default: oracle)
    language_groups: {lang: "high" | "low" | ...}       groups of the gap analysis
    significance: {test, correction, alpha, seed, n_resamples, family}
    runs: [{path, qrels, collection, lang, system,      path required: the run file; qrels: its qrels file
            tag, command, model, model_sha256,          (else found as in the layout); collection, lang and
            data_sha256, config}]                       system default to runs/<collection>/<lang>/<system>.run;
                                                        relative paths are relative to RESULTS_DIR
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clir_eval.io import InputFileError

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
RUNS_DIR = "runs"
RUN_SUFFIXES = (".run", ".trec", ".run.gz", ".trec.gz")
QRELS_NAMES = ("qrels.txt", "qrels.tsv", "qrels")


@dataclass(frozen=True)
class RunEntry:
    """One run of the results directory and what is known about how it was made."""

    path: Path
    collection: str
    lang: str
    system: str
    qrels: Path
    tag: str = ""
    command: str = ""
    model: str = ""
    model_sha256: str = ""
    data_sha256: str = ""
    config: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ResultsManifest:
    """What the report needs from a results directory (defaults where the manifest is silent)."""

    root: Path
    runs: tuple[RunEntry, ...]
    title: str = "CLIR evaluation report"
    created: str = ""
    git_commit: str = ""
    command: str = ""
    metrics: tuple[str, ...] = ()
    baselines: tuple[str, ...] = ()
    oracle: str | None = None
    upper_bounds: tuple[str, ...] = ()
    language_groups: Mapping[str, str] = field(default_factory=dict)
    significance: Mapping[str, Any] = field(default_factory=dict)
    from_manifest: bool = False


def read_results(root: str | os.PathLike) -> ResultsManifest:
    """Read ``root/manifest.json`` if present (tolerating missing fields), else scan the layout.

    Raises:
        InputFileError: the manifest is not valid JSON or a field has the wrong type; a run or its qrels
            cannot be found.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputFileError(root, None, "results directory does not exist")
    path = root / MANIFEST
    data: dict[str, Any] = {}
    if path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise InputFileError(path, exc.lineno, f"not valid JSON: {exc.msg}") from None
        if not isinstance(data, dict):
            raise InputFileError(path, None, "the manifest must be a JSON object")
    entries = data.get("runs")
    if entries:
        if not isinstance(entries, list):
            raise InputFileError(path, None, "'runs' must be a list")
        runs = tuple(_entry_from_manifest(root, path, i, item) for i, item in enumerate(entries))
    else:
        runs = tuple(_scan(root))
    if not runs:
        raise InputFileError(root, None, f"no run files found (looked for runs/*/*/*{{{','.join(RUN_SUFFIXES)}}})")
    groups = _mapping(path, data, "language_groups")
    significance = _mapping(path, data, "significance")
    return ResultsManifest(
        root=root,
        runs=runs,
        title=str(data.get("title") or ResultsManifest.title),
        created=str(data.get("created", "")),
        git_commit=str(data.get("git_commit", "")),
        command=_command(data.get("command", "")),
        metrics=tuple(_strings(path, data, "metrics")),
        baselines=tuple(_strings(path, data, "baselines")),
        oracle=data.get("oracle") or None,
        upper_bounds=tuple(_strings(path, data, "upper_bounds")),
        language_groups={str(k): str(v) for k, v in groups.items()},
        significance=significance,
        from_manifest=bool(data),
    )


def _scan(root: Path) -> list[RunEntry]:
    runs = []
    base = root / RUNS_DIR if (root / RUNS_DIR).is_dir() else root
    for lang_dir in sorted(p for p in base.glob("*/*") if p.is_dir()):
        for file in sorted(lang_dir.iterdir()):
            if file.is_file() and file.name.endswith(RUN_SUFFIXES):
                runs.append(
                    RunEntry(
                        path=file,
                        collection=lang_dir.parent.name,
                        lang=lang_dir.name,
                        system=_system_name(file),
                        qrels=_find_qrels(root, file),
                    )
                )
    return runs


def _entry_from_manifest(root: Path, manifest: Path, index: int, item: Any) -> RunEntry:
    if not isinstance(item, dict) or not isinstance(item.get("path"), str):
        raise InputFileError(manifest, None, f"runs[{index}] must be an object with a string 'path'")
    run_path = root / item["path"]
    if not run_path.is_file():
        raise InputFileError(manifest, None, f"runs[{index}]: run file {run_path} does not exist")
    qrels = root / item["qrels"] if item.get("qrels") else _find_qrels(root, run_path)
    if not qrels.is_file():
        raise InputFileError(manifest, None, f"runs[{index}]: qrels {qrels} does not exist")
    config = item.get("config") or {}
    return RunEntry(
        path=run_path,
        collection=str(item.get("collection") or run_path.parent.parent.name),
        lang=str(item.get("lang") or run_path.parent.name),
        system=str(item.get("system") or _system_name(run_path)),
        qrels=qrels,
        tag=str(item.get("tag", "")),
        command=_command(item.get("command", "")),
        model=str(item.get("model", "")),
        model_sha256=str(item.get("model_sha256", "")),
        data_sha256=str(item.get("data_sha256", "")),
        config=config if isinstance(config, dict) else {"value": config},
    )


def _find_qrels(root: Path, run_path: Path) -> Path:
    folder = run_path.parent
    while True:
        for name in QRELS_NAMES:
            if (folder / name).is_file():
                return folder / name
        if folder == root or folder.parent == folder or root not in folder.parents:
            break
        folder = folder.parent
    raise InputFileError(run_path, None, f"no qrels ({' / '.join(QRELS_NAMES)}) beside it or in a parent folder")


def _system_name(path: Path) -> str:
    name = path.name
    for suffix in sorted(RUN_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _command(value: Any) -> str:
    """A command given as a string or an argv list, as one shell-like line."""
    if isinstance(value, list):
        import shlex

        return shlex.join(str(v) for v in value)
    return str(value or "")


def _strings(path: Path, data: Mapping[str, Any], key: str) -> list[str]:
    value = data.get(key) or []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InputFileError(path, None, f"'{key}' must be a list of strings")
    return value


def _mapping(path: Path, data: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key) or {}
    if not isinstance(value, dict):
        raise InputFileError(path, None, f"'{key}' must be an object")
    return value
