"""One loader for the built-in collections and for a user's own directory.

A collection is a corpus, per-split qrels and per-split, per-language topics. It is described by
``collection.yaml`` (see ``docs/collections.md``) or, without one, by the conventional layout::

    corpus.jsonl | corpus.jsonl.gz | corpus/        Pyserini JsonCollection
    qrels.txt                                       one split, named "test"
      or <split>.qrels (one or more)                one split per file
    topics/<lang>.<ext>                             with qrels.txt (TSV or TREC topics)
      or topics/<split>/<lang>.<ext>                with <split>.qrels

Built-in collections live under ``<data root>/collections/<name>/collection.yaml``; the data root
is ``$CLIR_EVAL_DATA`` when set, else the package data (:mod:`clir_eval.resources`: the repository's
``collections/``, ``topics/``, ``qrels/`` in a checkout, copies of them in a wheel). Adding a built-in collection
is adding its folders there.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping

from clir_eval.collections.readers import read_corpus, read_qrels, read_topics
from clir_eval.collections.records import Document, Qrel, Topic
from clir_eval.io import InputFileError, parse_yaml, yaml_key_lines

logger = logging.getLogger(__name__)

DATA_ENV = "CLIR_EVAL_DATA"
MANIFEST = "collection.yaml"
GROUPS = ("high", "low")
ORACLE_GROUP = "oracle"
UNSPECIFIED_GROUP = "unspecified"
_LANG_CODE = re.compile(r"^[a-z]{2,3}(?:-[A-Za-z0-9]{2,8})*$")
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_MANIFEST_KEYS = {
    "name": "collection name (defaults to the directory name)",
    "description": "one-paragraph description",
    "source": "where the data comes from (URL)",
    "licence": "licence name, e.g. CC BY-SA 4.0",
    "licence_file": "licence text beside the manifest",
    "citation": "BibTeX to cite",
    "corpus": "path of the JSONL corpus (file or directory)",
    "oracle_lang": "language of the oracle (original) queries, e.g. en",
    "groups": "mapping group -> list of languages (groups: high, low)",
    "splits": "mapping split -> {qrels: path, topics: {lang: path}}",
    "bitext_splits": "splits whose topics may be paired as bitext (never a test split)",
    "parallel_topics": "true (default): every language has the same qids; false: each language its own queries",
    "counts": "counts the converter measured (informational)",
    "notes": "free text",
    "provenance": "mapping of source files to their SHA-256",
}
_SPLIT_KEYS = ("qrels", "topics")


def data_root() -> Path:
    """Folder holding ``collections/``, ``topics/``, ``qrels/`` and ``regressions/``: ``$CLIR_EVAL_DATA`` when set,
    else the package data (:func:`clir_eval.resources.package_data_dir`)."""
    from clir_eval.resources import package_data_dir

    override = os.environ.get(DATA_ENV)
    if override:
        return Path(override).expanduser().resolve()
    return package_data_dir()


def builtin_dir() -> Path:
    """``<data root>/collections``."""
    return data_root() / "collections"


@dataclass(frozen=True)
class Collection:
    """A test collection: corpus, qrels per split, topics per split and language. Paths are absolute."""

    name: str
    root: Path
    corpus_path: Path
    topics_paths: Mapping[str, Mapping[str, Path]]
    qrels_paths: Mapping[str, Path]
    oracle_lang: str | None = None
    groups: Mapping[str, str] = field(default_factory=dict)
    description: str = ""
    licence: str = ""
    citation: str = ""
    source: str = ""
    bitext_splits: tuple[str, ...] = ()
    builtin: bool = False
    # False when each language has its own queries (lafand-x): a language is then evaluated on the judgements
    # of its own qids only, since trec_eval -c would count every other language's query as a 0.
    parallel_topics: bool = True

    def __post_init__(self) -> None:
        if not self.qrels_paths:
            raise ValueError(f"collection {self.name!r} has no split (no qrels)")
        if set(self.topics_paths) != set(self.qrels_paths):
            raise ValueError(
                f"collection {self.name!r}: splits with topics {sorted(self.topics_paths)} "
                f"differ from splits with qrels {sorted(self.qrels_paths)}"
            )
        for split, by_lang in self.topics_paths.items():
            if not by_lang:
                raise ValueError(f"collection {self.name!r}: split {split!r} has no topics")
        for lang, group in self.groups.items():
            if group not in GROUPS:
                raise ValueError(f"language {lang!r} has group {group!r}; valid groups: {', '.join(GROUPS)}")
            if lang == self.oracle_lang:
                raise ValueError(f"the oracle language {lang!r} must not also be in a group")
        for split in self.bitext_splits:
            if split not in self.qrels_paths:
                raise ValueError(f"bitext split {split!r} is not a split of {self.name!r} ({', '.join(self.splits)})")
        # Own copies, so a caller's later edits to the dicts it passed cannot change the collection. Plain
        # dicts (not MappingProxyType) keep the object picklable for worker processes; treat them as read-only.
        object.__setattr__(self, "topics_paths", {s: dict(m) for s, m in self.topics_paths.items()})
        object.__setattr__(self, "qrels_paths", dict(self.qrels_paths))
        object.__setattr__(self, "groups", dict(self.groups))
        object.__setattr__(self, "bitext_splits", tuple(self.bitext_splits))

    @property
    def splits(self) -> tuple[str, ...]:
        """Split names in manifest order (e.g. ``("dev", "test")``)."""
        return tuple(self.qrels_paths)

    @property
    def languages(self) -> tuple[str, ...]:
        """Every topic language over all splits, sorted (the oracle language included)."""
        return tuple(sorted({lang for by_lang in self.topics_paths.values() for lang in by_lang}))

    def languages_in(self, split: str) -> tuple[str, ...]:
        """Topic languages of one split, sorted."""
        return tuple(sorted(self._split_topics(split)))

    def language_group(self, lang: str) -> str:
        """``"high"``/``"low"`` as the manifest says, ``"oracle"`` for the oracle language, else ``"unspecified"``."""
        if lang not in self.languages:
            raise KeyError(f"{self.name!r} has no topics in {lang!r}; languages: {', '.join(self.languages)}")
        if lang == self.oracle_lang:
            return ORACLE_GROUP
        return self.groups.get(lang, UNSPECIFIED_GROUP)

    def topics_path(self, lang: str, split: str = "test") -> Path:
        """Path of the topics file for ``lang`` in ``split``."""
        by_lang = self._split_topics(split)
        if lang not in by_lang:
            raise KeyError(
                f"{self.name!r} split {split!r} has no topics in {lang!r}; languages: {', '.join(sorted(by_lang))}"
            )
        return by_lang[lang]

    def qrels_path(self, split: str = "test") -> Path:
        """Path of the qrels file of ``split``."""
        self._split_topics(split)
        return self.qrels_paths[split]

    def topics(self, lang: str, split: str = "test") -> list[Topic]:
        """Queries in ``lang`` for ``split``."""
        return read_topics(self.topics_path(lang, split), lang)

    def qrels(self, split: str = "test", lang: str | None = None) -> list[Qrel]:
        """Relevance judgements of ``split``; with ``lang``, those a run in ``lang`` is evaluated on.

        With parallel topics (every language the same qids) that is every judgement of the split; otherwise
        only the judgements of the qids that have a topic in ``lang``.
        """
        qrels = read_qrels(self.qrels_path(split))
        if lang is None or self.parallel_topics:
            return qrels
        qids = {topic.qid for topic in self.topics(lang, split)}
        return [qrel for qrel in qrels if qrel.qid in qids]

    def documents(self) -> Iterator[Document]:
        """Stream the corpus (the same for every split: retrieval is always over the full corpus)."""
        return read_corpus(self.corpus_path)

    def count_documents(self) -> int:
        """Number of documents (reads the corpus once)."""
        return sum(1 for _ in self.documents())

    def _split_topics(self, split: str) -> Mapping[str, Path]:
        if split not in self.topics_paths:
            raise KeyError(f"{self.name!r} has no split {split!r}; splits: {', '.join(self.splits)}")
        return self.topics_paths[split]


def list_collections() -> list[str]:
    """Names of the built-in collections (folders under ``<data root>/collections`` with a ``collection.yaml``).

    Finding none is logged as a warning naming the folder: the leakage guard and the bitext sources rely on this
    list, so an empty one is never silent.
    """
    folder = builtin_dir()
    names = sorted(p.name for p in folder.iterdir() if (p / MANIFEST).is_file()) if folder.is_dir() else []
    if not names:
        logger.warning("no built-in collections: %s", where_builtins_are())
    return names


def where_builtins_are() -> str:
    """Where the built-in collections were looked for and why that folder, for messages that find none."""
    folder = builtin_dir()
    why = f"${DATA_ENV} is set" if os.environ.get(DATA_ENV) else "the package data"
    state = "holds no <name>/collection.yaml" if folder.is_dir() else "does not exist"
    return f"{folder} ({why}) {state}"


def load_collection(name_or_dir: str | os.PathLike, validate: bool = True) -> Collection:
    """Load a built-in collection by name (``"xquad-r"``, ``"ntrex"``) or a user directory.

    Args:
        name_or_dir: a built-in name, a directory with ``collection.yaml`` or the conventional layout, or
            ``irds:<dataset-id>`` (:mod:`clir_eval.collections.irds`).
        validate: run :func:`validate_collection` (once per content of the files: the result is remembered in the
            cache) and raise on its errors (warnings are logged).

    Raises:
        InputFileError: a bad manifest, a missing file, or (with ``validate``) invalid data.
        KeyError: neither a built-in name nor an existing directory; an unknown or unusable ir_datasets id.
    """
    from clir_eval.collections import irds

    path = Path(name_or_dir)
    builtin = False
    if irds.is_irds(name_or_dir):  # converted once into the cache, then read like any directory
        path = irds.irds_collection_dir(str(name_or_dir))
    elif isinstance(name_or_dir, str) and name_or_dir in list_collections():
        path, builtin = builtin_dir() / name_or_dir, True
    elif not path.is_dir():
        raise KeyError(
            f"{str(name_or_dir)!r} is neither a built-in collection ({', '.join(list_collections()) or 'none found'}) "
            f"nor a directory"
        )
    path = path.resolve()
    manifest = path / MANIFEST
    collection = _from_manifest(manifest, builtin) if manifest.is_file() else _from_layout(path)
    if validate:
        from clir_eval.collections.validation import validate_collection_once

        report = validate_collection_once(collection)
        for warning in report.warnings:
            logger.warning("%s: %s", collection.name, warning)
        report.raise_for_errors()
    return collection


def _from_manifest(manifest: Path, builtin: bool) -> Collection:
    import yaml

    try:
        text = manifest.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputFileError(manifest, None, f"not valid UTF-8 ({exc.reason})") from None
    data = parse_yaml(text, manifest)
    node = yaml.compose(text)
    if not isinstance(data, dict):
        raise InputFileError(manifest, None, "expected a mapping of keys (name, corpus, splits, ...)")
    lines = yaml_key_lines(node)

    def error(key: str, message: str) -> InputFileError:
        # The line of the most specific key that exists (``splits.test.topics.sw`` -> ``splits.test.topics``...).
        parts = key.split(".")
        line = next(
            (lines[".".join(parts[:n])] for n in range(len(parts), 0, -1) if ".".join(parts[:n]) in lines), None
        )
        return InputFileError(manifest, line, message)

    for key in data:
        if key not in _MANIFEST_KEYS:
            raise error(key, f"unknown key {key!r}; valid keys: {', '.join(_MANIFEST_KEYS)}")
    for key in ("corpus", "splits"):
        if key not in data:
            raise InputFileError(manifest, None, f"missing key {key!r} ({_MANIFEST_KEYS[key]})")
    root = manifest.parent

    def resolve(value: object, key: str) -> Path:
        if not isinstance(value, str) or not value:
            raise error(key, f"{key}: expected a relative path, got {value!r}")
        target = (root / value).resolve()
        if not target.exists():
            raise error(key, f"{key}: {value} does not exist (resolved to {target})")
        return target

    splits = data["splits"]
    if not isinstance(splits, dict) or not splits:
        raise error("splits", "splits: expected a mapping split -> {qrels, topics}")
    qrels_paths: dict[str, Path] = {}
    topics_paths: dict[str, dict[str, Path]] = {}
    for split, spec in splits.items():
        split = str(split)
        if not _SPLIT_NAME.match(split):
            raise error("splits", f"splits: bad split name {split!r}")
        if not isinstance(spec, dict):
            raise error(f"splits.{split}", f"splits.{split}: expected a mapping with keys {', '.join(_SPLIT_KEYS)}")
        for key in spec:
            if key not in _SPLIT_KEYS:
                raise error(
                    f"splits.{split}.{key}",
                    f"splits.{split}: unknown key {key!r}; valid keys: {', '.join(_SPLIT_KEYS)}",
                )
        for key in _SPLIT_KEYS:
            if key not in spec:
                raise error(f"splits.{split}", f"splits.{split}: missing key {key!r}")
        qrels_paths[split] = resolve(spec["qrels"], f"splits.{split}.qrels")
        if not isinstance(spec["topics"], dict) or not spec["topics"]:
            raise error(f"splits.{split}.topics", f"splits.{split}.topics: expected a mapping language -> path")
        topics_paths[split] = {}
        for lang, value in spec["topics"].items():
            lang = str(lang)
            if not _LANG_CODE.match(lang):
                raise error(
                    f"splits.{split}.topics.{lang}",
                    f"splits.{split}.topics: {lang!r} is not a language code (e.g. sw, fil, zh-CN)",
                )
            topics_paths[split][lang] = resolve(value, f"splits.{split}.topics.{lang}")

    groups: dict[str, str] = {}
    raw_groups = data.get("groups") or {}
    if not isinstance(raw_groups, dict):
        raise error("groups", "groups: expected a mapping group -> list of languages")
    for group, langs in raw_groups.items():
        if group not in GROUPS:
            raise error(f"groups.{group}", f"groups: unknown group {group!r}; valid groups: {', '.join(GROUPS)}")
        if not isinstance(langs, list):
            raise error(f"groups.{group}", f"groups.{group}: expected a list of languages")
        for lang in langs:
            if str(lang) in groups:
                raise error(f"groups.{group}", f"groups: {lang!r} is in both {groups[str(lang)]!r} and {group!r}")
            groups[str(lang)] = group
    all_langs = {lang for by_lang in topics_paths.values() for lang in by_lang}
    unknown = sorted(set(groups) - all_langs)
    if unknown:
        raise error("groups", f"groups name languages without topics: {', '.join(unknown)}")
    oracle = data.get("oracle_lang")
    if oracle is not None and str(oracle) not in all_langs:
        raise error("oracle_lang", f"oracle_lang {oracle!r} has no topics")
    bitext_splits = data.get("bitext_splits") or []
    parallel_topics = data.get("parallel_topics", True)
    if not isinstance(parallel_topics, bool):
        raise error("parallel_topics", f"parallel_topics: expected true or false, got {parallel_topics!r}")
    if not isinstance(bitext_splits, list):
        raise error("bitext_splits", "bitext_splits: expected a list of split names")
    for key in ("name", "description", "source", "licence", "citation", "notes"):
        if key in data and not isinstance(data[key], str):
            raise error(key, f"{key}: expected text")
    if "licence_file" in data:
        resolve(data["licence_file"], "licence_file")
    corpus_path = resolve(data["corpus"], "corpus")
    try:
        return Collection(
            name=data.get("name") or root.name,
            root=root,
            corpus_path=corpus_path,
            topics_paths=topics_paths,
            qrels_paths=qrels_paths,
            oracle_lang=str(oracle) if oracle is not None else None,
            groups=groups,
            description=data.get("description", "").strip(),
            licence=data.get("licence", ""),
            citation=data.get("citation", "").strip(),
            source=data.get("source", ""),
            bitext_splits=tuple(str(s) for s in bitext_splits),
            builtin=builtin,
            parallel_topics=parallel_topics,
        )
    except ValueError as exc:
        raise InputFileError(manifest, None, str(exc)) from None


def _from_layout(root: Path) -> Collection:
    """A collection from the conventional layout (no manifest); see the module docstring."""
    corpus_candidates = [root / "corpus.jsonl", root / "corpus.jsonl.gz", root / "corpus"]
    found = [p for p in corpus_candidates if p.exists()]
    if len(found) != 1:
        raise InputFileError(
            root,
            None,
            f"expected exactly one of corpus.jsonl, corpus.jsonl.gz, corpus/ (found {len(found)}), or a {MANIFEST}",
        )
    single = root / "qrels.txt"
    per_split = sorted(root.glob("*.qrels"))
    if single.is_file() and per_split:
        raise InputFileError(
            root, None, "both qrels.txt and *.qrels found: keep one convention, or write a collection.yaml"
        )
    topics_dir = root / "topics"
    if not topics_dir.is_dir():
        raise InputFileError(root, None, f"no topics/ folder (topics/<lang>.tsv) and no {MANIFEST}")
    if single.is_file():
        qrels_paths = {"test": single.resolve()}
        topics_paths = {"test": _topics_in(topics_dir)}
    elif per_split:
        qrels_paths = {p.name[: -len(".qrels")]: p.resolve() for p in per_split}
        topics_paths = {}
        for split in qrels_paths:
            if not (topics_dir / split).is_dir():
                raise InputFileError(
                    topics_dir, None, f"split {split!r} has {split}.qrels but no topics/{split}/ folder"
                )
            topics_paths[split] = _topics_in(topics_dir / split)
    else:
        raise InputFileError(root, None, f"no qrels.txt or <split>.qrels and no {MANIFEST}")
    langs = {lang for by_lang in topics_paths.values() for lang in by_lang}
    return Collection(
        name=root.name,
        root=root,
        corpus_path=found[0].resolve(),
        topics_paths=topics_paths,
        qrels_paths=qrels_paths,
        oracle_lang="en" if "en" in langs else None,
    )


def _topics_in(folder: Path) -> dict[str, Path]:
    """``{lang: path}`` for the files ``<lang>.<ext>`` in ``folder`` (hidden files ignored)."""
    topics: dict[str, Path] = {}
    for file in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        lang = file.name.split(".", 1)[0]
        if not _LANG_CODE.match(lang):
            raise InputFileError(file, None, _bad_topics_name(lang))
        if lang in topics:
            raise InputFileError(
                file, None, f"two topics files for language {lang!r}: {topics[lang].name} and {file.name}"
            )
        topics[lang] = file.resolve()
    if not topics:
        raise InputFileError(folder, None, "no topics files (<lang>.tsv or TREC topics)")
    return topics


def _bad_topics_name(lang: str) -> str:
    """Why ``<lang>.<ext>`` is not a topics file name, and the name to use."""
    if _LANG_CODE.match(lang.lower()):
        return f"language codes are lowercase: rename it to {lang.lower()}.<ext>"
    return (f"{lang!r} is not a language code: topics files are named <lang>.<ext> with an ISO 639 code of 2-3 "
            f"lowercase letters (optionally -Script or -REGION), e.g. sw.tsv, fil.trec, zh-CN.tsv")
