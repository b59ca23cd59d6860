"""Bitext for distillation: the committed LAFAND files, or a collection's non-test topics paired with English.

Two kinds of source, both found by name under ``<data root>/collections/<name>/``:

* a folder with ``bitext.yaml`` (``lafand``): JSONL.gz files per language and split;
* a collection whose manifest lists ``bitext_splits`` (``ntrex``: ``dev`` only): the topics of language
  X in that split paired by qid with the oracle-language (English) topics. Test splits are refused, so
  nothing used for reported numbers is ever trained on.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from clir_eval.collections.readers import read_bitext
from clir_eval.collections.records import BitextPair
from clir_eval.collections.registry import Collection, builtin_dir, list_collections, load_collection
from clir_eval.io import InputFileError, parse_yaml

BITEXT_MANIFEST = "bitext.yaml"
_KEYS = (
    "name",
    "description",
    "source",
    "licence",
    "licence_file",
    "citation",
    "target_lang",
    "languages",
    "notes",
    "counts",
    "provenance",
)


@dataclass(frozen=True)
class BitextSource:
    """A file-based bitext source: ``files[lang][split]`` is an absolute path."""

    name: str
    root: Path
    target_lang: str
    files: Mapping[str, Mapping[str, Path]]
    licence: str = ""
    citation: str = ""

    def __post_init__(self) -> None:
        if not self.files:
            raise ValueError(f"bitext source {self.name!r} lists no files")
        object.__setattr__(self, "files", {k: dict(v) for k, v in self.files.items()})


def _files_source(source: str) -> Path | None:
    """The folder of a file-based source: a built-in name first, else a directory with ``bitext.yaml``
    (relative to the working directory, like every other path a user gives)."""
    for folder in (builtin_dir() / source, Path(source)):
        if (folder / BITEXT_MANIFEST).is_file():
            return folder
    return None


def _paired_collection(source: str) -> Collection:
    """A collection (built-in name or directory) whose manifest lists ``bitext_splits``."""
    if source not in list_collections() and not Path(source).is_dir():
        raise KeyError(f"unknown bitext source {source!r}; sources: {', '.join(list_bitext_sources())}, or a "
                       f"directory with {BITEXT_MANIFEST} or with a collection.yaml listing bitext_splits")
    collection = load_collection(source, validate=False)
    if not collection.bitext_splits:
        raise KeyError(f"{source!r} provides no bitext; sources: {', '.join(list_bitext_sources())}")
    return collection


def list_bitext_sources() -> list[str]:
    """Names usable with :func:`load_bitext`: folders with ``bitext.yaml`` and collections with ``bitext_splits``."""
    folder = builtin_dir()
    files = [p.name for p in folder.iterdir() if (p / BITEXT_MANIFEST).is_file()] if folder.is_dir() else []
    paired = [name for name in list_collections() if load_collection(name, validate=False).bitext_splits]
    return sorted(set(files) | set(paired))


def load_bitext_source(name_or_dir: str | os.PathLike) -> BitextSource:
    """Read a ``bitext.yaml`` (built-in name or directory); unknown keys are errors naming the key."""
    path = _files_source(str(name_or_dir))
    if path is None:
        raise KeyError(f"no bitext source {str(name_or_dir)!r} (no {Path(name_or_dir) / BITEXT_MANIFEST})")
    manifest = path / BITEXT_MANIFEST
    data = parse_yaml(manifest.read_text(encoding="utf-8"), manifest)
    if not isinstance(data, dict):
        raise InputFileError(manifest, None, "expected a mapping")
    for key in data:
        if key not in _KEYS:
            raise InputFileError(manifest, None, f"unknown key {key!r}; valid keys: {', '.join(_KEYS)}")
    for key in ("target_lang", "languages"):
        if key not in data:
            raise InputFileError(manifest, None, f"missing key {key!r}")
    files: dict[str, dict[str, Path]] = {}
    for lang, by_split in data["languages"].items():
        if not isinstance(by_split, dict):
            raise InputFileError(manifest, None, f"languages.{lang}: expected a mapping split -> file")
        for split, name in by_split.items():
            file = (path / str(name)).resolve()
            if not file.is_file():
                raise InputFileError(manifest, None, f"languages.{lang}.{split}: {name} does not exist")
            files.setdefault(str(lang), {})[str(split)] = file
    return BitextSource(
        name=data.get("name") or path.name,
        root=path.resolve(),
        target_lang=str(data["target_lang"]),
        files=files,
        licence=data.get("licence", ""),
        citation=data.get("citation", ""),
    )


def bitext_languages(source: str) -> dict[str, tuple[str, ...]]:
    """``{lang: (splits...)}`` available from ``source`` (``"lafand"``, ``"ntrex"``)."""
    if _files_source(source) is not None:
        return {lang: tuple(by_split) for lang, by_split in load_bitext_source(source).files.items()}
    collection = _paired_collection(source)
    langs: dict[str, list[str]] = {}
    for split in collection.bitext_splits:
        for lang in collection.languages_in(split):
            if lang != collection.oracle_lang and collection.oracle_lang in collection.languages_in(split):
                langs.setdefault(lang, []).append(split)
    return {lang: tuple(splits) for lang, splits in sorted(langs.items())}


def load_bitext(source: str, lang: str, split: str) -> list[BitextPair]:
    """Aligned ``lang``-English pairs of ``split`` from ``source``.

    ``"lafand"``: the committed files (splits ``train``, ``dev``). ``"ntrex"``: the ``dev`` topics in
    ``lang`` paired by qid with the ``dev`` English topics (``pair_id`` = qid); any other split is refused.

    Raises:
        KeyError: unknown source, language or split (the message lists the valid ones).
        ValueError: a split that the source reserves for evaluation.
    """
    if _files_source(source) is not None:
        files = load_bitext_source(source).files
        if lang not in files:
            raise KeyError(f"{source!r} has no bitext for {lang!r}; languages: {', '.join(sorted(files))}")
        if split not in files[lang]:
            raise KeyError(f"{source!r} has no {split!r} split for {lang!r}; splits: {', '.join(files[lang])}")
        return read_bitext(files[lang][split])
    collection = _paired_collection(source)
    if split not in collection.bitext_splits:
        raise ValueError(
            f"{source!r} split {split!r} is not available as bitext: only {list(collection.bitext_splits)} "
            f"may be trained on (the other splits are for evaluation)"
        )
    oracle = collection.oracle_lang
    if oracle is None or lang == oracle:
        raise KeyError(f"{source!r}: bitext pairs a non-oracle language with the oracle language {oracle!r}")
    english = {t.qid: t.text for t in collection.topics(oracle, split)}
    pairs = []
    for topic in collection.topics(lang, split):
        if topic.qid not in english:
            raise InputFileError(
                collection.topics_path(oracle, split), None, f"no {oracle!r} topic for qid {topic.qid!r}"
            )
        pairs.append(BitextPair(topic.text, english[topic.qid], lang, oracle, topic.qid))
    return pairs



def sample_seed(seed: int | str, lang: str, split: str) -> str:
    """The seed of one language's pair budget: the same string in a study and in ``clir-eval distill --seed``."""
    return f"{seed}-{lang}-{split}"


def sample_pairs(pairs: list[BitextPair], max_pairs: int | None, seed: str) -> list[BitextPair]:
    """``max_pairs`` pairs as a seeded random sample (``random.Random(seed).sample``), not the first lines, so a
    budget does not depend on the order of the bitext file; every pair when ``max_pairs`` is None or not smaller.

    A study's ``max_pairs`` and ``clir-eval distill --max-pairs`` both pick their pairs here, with
    :func:`sample_seed`, so the same seed gives the same pairs.
    """
    if max_pairs is None or len(pairs) <= max_pairs:
        return list(pairs)
    return random.Random(seed).sample(pairs, max_pairs)
