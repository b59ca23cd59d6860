"""Cross-file checks of a collection: what one file's reader cannot see on its own.

Errors (the collection is unusable as is):

* any malformed line, empty query text, duplicate qid/docid, id with whitespace or non-UTF-8 byte
  (raised by the readers, collected here with file and line);
* an empty corpus;
* a *relevant* judgement (relevance > 0) for a docid that is not in the corpus: that document can
  never be retrieved, so every metric would be silently capped.

Warnings (reported with a count and examples; trec_eval would run, but the user should know):

* a judgement with relevance <= 0 for a docid not in the corpus (harmless for the metrics);
* a qrels qid with no topic in some language (that query cannot be run in that language); with
  ``parallel_topics: false`` (each language its own queries), one with no topic in any query language or
  none in the oracle language;
* a topic with no relevant judgement (trec_eval ignores it, so it does not count in any average).

``strict=True`` turns warnings into errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable

from clir_eval.io import InputFileError

if TYPE_CHECKING:
    from clir_eval.collections.registry import Collection

_EXAMPLES = 5


class CollectionValidationError(ValueError):
    """A collection failed validation; the message lists every error."""

    def __init__(self, name: str, errors: list[str]) -> None:
        self.errors = list(errors)
        super().__init__(f"collection {name!r} is invalid:\n  " + "\n  ".join(errors))


@dataclass(frozen=True)
class ValidationReport:
    """What :func:`validate_collection` found, plus the counts it measured."""

    name: str
    errors: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    num_documents: int = 0
    num_topics: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> lang -> count
    num_relevant: dict[str, int] = field(default_factory=dict)  # split -> judgements with relevance > 0

    @property
    def ok(self) -> bool:
        return not self.errors

    def raise_for_errors(self) -> None:
        """Raise :class:`CollectionValidationError` listing every error, if there is any."""
        if self.errors:
            raise CollectionValidationError(self.name, list(self.errors))


def _examples(items: Iterable[str]) -> str:
    items = sorted(items)
    shown = ", ".join(repr(i) for i in items[:_EXAMPLES])
    return shown + (", ..." if len(items) > _EXAMPLES else "")


def validate_collection(collection: Collection, strict: bool = False) -> ValidationReport:
    """Read every file of ``collection`` and check it against the others (see the module docstring)."""
    errors: list[str] = []
    warnings: list[str] = []

    from clir_eval.progress import progress

    docids: set[str] = set()
    corpus_ok = True
    try:
        with progress(f"reading {collection.name} corpus", unit="docs", show=False) as report:
            for doc in collection.documents():
                docids.add(doc.docid)
                report.advance()
    except InputFileError as exc:
        errors.append(str(exc))
        corpus_ok = False
    if corpus_ok and not docids:
        # Said once here, rather than as every relevant judgement pointing outside the corpus.
        errors.append(f"{collection.corpus_path}: the corpus has no documents")
        corpus_ok = False

    num_topics: dict[str, dict[str, int]] = {}
    num_relevant: dict[str, int] = {}
    for split in collection.splits:
        try:
            qrels = collection.qrels(split)
        except InputFileError as exc:
            errors.append(str(exc))
            qrels = None
        topic_qids: dict[str, set[str]] = {}
        for lang in collection.languages_in(split):
            try:
                topic_qids[lang] = {t.qid for t in collection.topics(lang, split)}
            except InputFileError as exc:
                errors.append(str(exc))
        num_topics[split] = {lang: len(qids) for lang, qids in topic_qids.items()}
        if qrels is None:
            continue
        qrels_file = collection.qrels_path(split)
        relevant_qids = {q.qid for q in qrels if q.relevance > 0}
        num_relevant[split] = sum(1 for q in qrels if q.relevance > 0)
        if not qrels:
            errors.append(f"{qrels_file}: no judgements")
        if corpus_ok:
            missing_rel = {q.docid for q in qrels if q.relevance > 0 and q.docid not in docids}
            missing_other = {q.docid for q in qrels if q.relevance <= 0 and q.docid not in docids} - missing_rel
            if missing_rel:
                errors.append(
                    f"{qrels_file}: {len(missing_rel)} relevant docid(s) not in the corpus "
                    f"{collection.corpus_path.name} (they can never be retrieved): {_examples(missing_rel)}"
                )
            if missing_other:
                warnings.append(
                    f"{qrels_file}: {len(missing_other)} non-relevant docid(s) not in the corpus: {_examples(missing_other)}"
                )
        judged_qids = {q.qid for q in qrels}
        if not collection.parallel_topics:
            # Each language has its own queries: a judged qid needs a topic in one query language (and in the
            # oracle language, which holds them all), not in every language.
            query_langs = [lang for lang in topic_qids if lang != collection.oracle_lang]
            unasked = judged_qids - set().union(*(topic_qids[lang] for lang in query_langs))
            if unasked:
                warnings.append(f"{qrels_file}: {len(unasked)} qrels qid(s) of split {split!r} have no topic in "
                                f"any query language: {_examples(unasked)}")
        for lang, qids in topic_qids.items():
            absent = judged_qids - qids
            if absent and (collection.parallel_topics or lang == collection.oracle_lang):
                warnings.append(
                    f"{collection.topics_path(lang, split)}: {len(absent)} qrels qid(s) of split {split!r} "
                    f"have no topic in {lang!r}: {_examples(absent)}"
                )
            unjudged = qids - relevant_qids
            if unjudged:
                warnings.append(
                    f"{collection.topics_path(lang, split)}: {len(unjudged)} topic(s) have no relevant "
                    f"judgement in {qrels_file.name} (trec_eval skips them): {_examples(unjudged)}"
                )
    if strict:
        errors.extend(warnings)
        warnings = []
    return ValidationReport(
        name=collection.name,
        errors=tuple(errors),
        warnings=tuple(warnings),
        num_documents=len(docids),
        num_topics=num_topics,
        num_relevant=num_relevant,
    )


#: Bumped when the checks change, so a memo of an older validation is not trusted.
VALIDATION_VERSION = 1


def validate_collection_once(collection: Collection) -> ValidationReport:
    """:func:`validate_collection`, remembered by the SHA-256 of the collection's files.

    Validating reads every document (a million-document corpus: tens of seconds) while hashing its files reads
    bytes only (about a second a GB), so each command after the first skips the parse. Only a collection
    without errors is remembered (``<cache root>/validated/<key>.json``); its warnings are kept and returned.
    """
    import hashlib
    import json

    from clir_eval.collections.readers import corpus_files
    from clir_eval.io import atomic_write, read_json_or_none, sha256_file
    from clir_eval.models.cache import model_cache_dir

    files = [*corpus_files(collection.corpus_path), *collection.qrels_paths.values(),
             *(path for by_lang in collection.topics_paths.values() for path in by_lang.values())]
    identity = [VALIDATION_VERSION, collection.name, collection.oracle_lang, *(str(path) for path in files),
                *(sha256_file(path) for path in files)]
    key = hashlib.sha256(json.dumps(identity).encode("utf-8")).hexdigest()
    memo = model_cache_dir().parent / "validated" / f"{key}.json"
    record = read_json_or_none(memo)
    if isinstance(record, dict) and record.get("name") == collection.name:
        return ValidationReport(name=collection.name, warnings=tuple(record["warnings"]),
                                num_documents=record["num_documents"], num_topics=record["num_topics"],
                                num_relevant=record["num_relevant"])
    report = validate_collection(collection)
    if report.ok:
        try:
            with atomic_write(memo) as handle:
                json.dump({"name": report.name, "warnings": list(report.warnings), "num_documents":
                           report.num_documents, "num_topics": report.num_topics,
                           "num_relevant": report.num_relevant}, handle)
        except OSError:  # a read-only cache only costs the next command a validation
            pass
    return report
