"""Readers for topics, qrels, corpora and bitext; every bad line raises :class:`InputFileError` (file + line).

Formats:

* topics: TSV ``qid<TAB>text`` (one file per language) or TREC ``<top> <num> ... <title> ... </top>``
  blocks, told apart by content (the first non-blank line starts with ``<top``), never by file name;
* qrels: TREC ``qid iteration docid relevance`` (any whitespace, relevance an int);
* corpus: Pyserini JsonCollection JSONL ``{"id", "contents"}`` with optional ``"title"`` and extra
  fields ignored; ``.jsonl.gz`` too, or a directory of such files (read in name order);
* bitext: JSONL ``{"id", "source", "target"}`` per line; the languages come from the file name
  ``<source>-<target>.<rest>`` (e.g. ``sw-en.train.jsonl.gz``) or from the caller.

Ids are kept exactly as written (``str``), never cast, and may not contain whitespace (runs and qrels are
whitespace-separated). A leading UTF-8 byte-order mark is ignored (:func:`clir_eval.io.read_text_lines`).
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Iterator

from clir_eval.collections.records import BitextPair, Document, Qrel, Topic
from clir_eval.io import InputFileError, c_atol, c_number_or_refuse, has_whitespace, read_text_lines

logger = logging.getLogger(__name__)

# A TREC topic block's fields: the text after a tag runs until the next tag (or the end of the block).
_TREC_NUM = re.compile(r"<num>\s*(?:Number:)?\s*(.*?)\s*(?=<|\n|$)", re.IGNORECASE)
_TREC_TITLE = re.compile(r"<title>\s*(.*?)\s*(?=<[/a-z]|$)", re.IGNORECASE | re.DOTALL)
_BITEXT_NAME = re.compile(r"^([A-Za-z]{2,3}(?:[-_][A-Za-z]{4})?)-([A-Za-z]{2,3}(?:[-_][A-Za-z]{4})?)\.")


def is_trec_topics(path: str | os.PathLike) -> bool:
    """True when the first non-blank line of ``path`` opens a TREC ``<top>`` block."""
    for _, line in read_text_lines(path):
        if line.strip():
            return line.strip().lower().startswith("<top")
    return False


def read_topics(path: str | os.PathLike, lang: str) -> list[Topic]:
    """Read a topics file (TSV ``qid<TAB>text`` or TREC ``<top>`` blocks) whose queries are in ``lang``.

    Blank lines are skipped. Errors (with file and line): a TSV line without exactly one tab, an empty
    qid or query text, a duplicate qid, a TREC block without ``<num>``/``<title>`` or never closed.
    """
    if not lang:
        raise ValueError("read_topics needs a language code (lang)")
    if is_trec_topics(path):
        topics = list(_read_trec_topics(path, lang))
    else:
        topics = list(_read_tsv_topics(path, lang))
    if not topics:
        raise InputFileError(path, None, "no topics in file")
    return topics


def read_qid_text_tsv(path: str | os.PathLike, text_name: str = "query text") -> Iterator[tuple[str, str]]:
    """``(qid, text)`` of each ``qid<TAB>text`` line (blank lines skipped): topics, and translated topics.

    Raises:
        InputFileError: a line without exactly one tab, an empty qid or ``text_name``, a duplicate qid.
    """
    seen: dict[str, int] = {}
    for number, line in read_text_lines(path):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 2:
            raise InputFileError(path, number, f"expected 'qid<TAB>text' (2 tab-separated fields), got {len(fields)}")
        qid, text = fields[0].strip(), fields[1].strip()
        if not qid:
            raise InputFileError(path, number, "empty qid")
        if not text:
            raise InputFileError(path, number, f"empty {text_name} for qid {qid!r}")
        _check_id(path, number, "qid", qid)
        if qid in seen:
            raise InputFileError(path, number, f"duplicate qid {qid!r} (first on line {seen[qid]})")
        seen[qid] = number
        yield qid, text


def _read_tsv_topics(path: str | os.PathLike, lang: str) -> Iterator[Topic]:
    for qid, text in read_qid_text_tsv(path):
        yield Topic(qid, text, lang)


def _read_trec_topics(path: str | os.PathLike, lang: str) -> Iterator[Topic]:
    seen: dict[str, int] = {}
    block: list[str] = []
    start: int | None = None
    for number, line in read_text_lines(path):
        lowered = line.strip().lower()
        if start is None:
            if not lowered:
                continue
            if not lowered.startswith("<top>"):
                raise InputFileError(path, number, "text outside a <top> ... </top> block")
            start, block = number, [line.strip()[len("<top>") :]]
        else:
            block.append(line)
        if "</top>" in lowered:
            text = "\n".join(block)
            end = text.lower().index("</top>")
            if text[end + len("</top>") :].strip():
                raise InputFileError(path, number, "text after </top> on the same line")
            topic = _parse_trec_block(path, start, text[:end], lang)
            if topic.qid in seen:
                raise InputFileError(path, start, f"duplicate qid {topic.qid!r} (first at line {seen[topic.qid]})")
            seen[topic.qid] = start
            yield topic
            start, block = None, []
    if start is not None:
        raise InputFileError(path, start, "<top> block is never closed with </top>")


def _parse_trec_block(path: str | os.PathLike, start: int, text: str, lang: str) -> Topic:
    num = _TREC_NUM.search(text)
    if num is None or not num.group(1).strip():
        raise InputFileError(path, start, "TREC topic without a <num>")
    qid = num.group(1).strip()
    _check_id(path, start, "qid", qid)
    title = _TREC_TITLE.search(text)
    if title is None:
        raise InputFileError(path, start, f"TREC topic {qid!r} without a <title>")
    query = " ".join(title.group(1).split())
    if not query:
        raise InputFileError(path, start, f"empty query text (<title>) for qid {qid!r}")
    return Topic(qid, query, lang)


def read_qrels(path: str | os.PathLike) -> list[Qrel]:
    """Read TREC qrels ``qid iteration docid relevance`` (whitespace-separated; the iteration is ignored).

    Relevance is read as trec_eval's C ``atol`` reads it (:func:`clir_eval.io.c_atol`: ``0_1`` is 0, ``1.5``
    is 1), with one warning naming the first value Python's ``int`` would have read differently.

    Errors: a line without exactly 4 fields, a relevance no reader sees an integer in, the same (qid, docid)
    judged twice.
    """
    qrels: list[Qrel] = []
    seen: dict[tuple[str, str], int] = {}
    odd = 0  # relevance values that Python's int() and C's atol read differently
    first_odd: tuple[int, str, int] | None = None
    for number, line in read_text_lines(path):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 4:
            raise InputFileError(path, number, f"expected 'qid 0 docid relevance' (4 fields), got {len(fields)}")
        qid, _, docid, rel = fields
        read = c_atol(rel)
        if read is None or not read.exact:
            read = c_number_or_refuse(path, number, rel, read, "relevance", int)
            if first_odd is None:
                first_odd = (number, rel, read.value)
            odd += 1
        relevance = int(read.value)
        if (qid, docid) in seen:
            raise InputFileError(
                path, number, f"qid {qid!r} judges docid {docid!r} twice (first on line {seen[qid, docid]})"
            )
        seen[qid, docid] = number
        qrels.append(Qrel(qid, docid, relevance))
    if first_odd is not None:
        logger.warning("%s:%d: relevance %r read as %d, the integer C's atol reads at its start, as trec_eval "
                       "does (%d such line(s))", path, first_odd[0], first_odd[1], first_odd[2], odd)
    return qrels


def corpus_files(path: str | os.PathLike) -> list[Path]:
    """The JSONL files of a corpus: ``path`` itself, or a directory's ``*.jsonl``/``*.jsonl.gz`` in name order."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.name.endswith((".jsonl", ".jsonl.gz")) and p.is_file())
        if not files:
            raise InputFileError(path, None, "corpus directory holds no .jsonl or .jsonl.gz file")
        return files
    if not path.is_file():
        raise InputFileError(path, None, "corpus file not found")
    return [path]


def count_corpus_lines(path: str | os.PathLike) -> int:
    """Non-empty lines of a corpus's files, counted on bytes without parsing (a progress total, not a check)."""
    import gzip

    count = 0
    for file in corpus_files(path):
        with (gzip.open(file, "rb") if file.name.endswith(".gz") else open(file, "rb")) as handle:
            count += sum(1 for line in handle if line.strip())
    return count


def read_corpus(path: str | os.PathLike) -> Iterator[Document]:
    """Stream documents from Pyserini JsonCollection JSONL (``.jsonl``, ``.jsonl.gz`` or a directory of them).

    Each line is an object with string ``"id"`` and ``"contents"`` and an optional string ``"title"``;
    other fields are ignored. A duplicate id raises an error naming both places (ids are remembered,
    so memory grows with the number of documents, not their size: a set of ids, about 80 bytes a document;
    where the first one stood is found by reading again, only when there is a duplicate).
    """
    seen: set[str] = set()
    for file in corpus_files(path):
        for number, line in read_text_lines(file):
            if not line.strip():
                continue
            record = _json_object(file, number, line)
            docid = _string_field(file, number, record, "id")
            _check_id(file, number, "document id", docid)
            contents = _string_field(file, number, record, "contents", allow_empty=True)
            title = record.get("title", "")
            if not isinstance(title, str):
                raise InputFileError(file, number, f"field 'title' must be a string, got {type(title).__name__}")
            if docid in seen:
                first_file, first_line = _first_occurrence(path, docid)
                where = f"line {first_line}" if first_file == file else f"{first_file}:{first_line}"
                raise InputFileError(file, number, f"duplicate document id {docid!r} (first at {where})")
            seen.add(docid)
            yield Document(docid, contents, title)


def _first_occurrence(path: str | os.PathLike, docid: str) -> tuple[Path, int]:
    """Where ``docid`` first stands in a corpus (read again: only a duplicate needs it)."""
    for file in corpus_files(path):
        for number, line in read_text_lines(file):
            if line.strip() and json.loads(line).get("id") == docid:
                return file, number
    raise AssertionError(f"{docid!r} was seen but is not found again")


def bitext_langs_from_name(path: str | os.PathLike) -> tuple[str, str] | None:
    """``("sw", "en")`` from a name like ``sw-en.train.jsonl.gz``; None when the name does not say."""
    match = _BITEXT_NAME.match(Path(path).name)
    return (match.group(1), match.group(2)) if match else None


def read_bitext(
    path: str | os.PathLike, source_lang: str | None = None, target_lang: str | None = None
) -> list[BitextPair]:
    """Read aligned pairs from JSONL(.gz) ``{"id", "source", "target"}`` lines.

    Languages are the arguments when given, else the file name's ``<source>-<target>.`` prefix.
    Errors: a missing/non-string/empty field, a duplicate id, languages that cannot be determined.
    """
    if source_lang is None or target_lang is None:
        named = bitext_langs_from_name(path)
        if named is None:
            raise InputFileError(
                path, None, "cannot tell the languages: name the file '<src>-<tgt>.<rest>' or pass them explicitly"
            )
        source_lang = source_lang or named[0]
        target_lang = target_lang or named[1]
    pairs: list[BitextPair] = []
    seen: dict[str, int] = {}
    for number, line in read_text_lines(path):
        if not line.strip():
            continue
        record = _json_object(path, number, line)
        pair_id = _string_field(path, number, record, "id")
        source = _string_field(path, number, record, "source")
        target = _string_field(path, number, record, "target")
        if pair_id in seen:
            raise InputFileError(path, number, f"duplicate pair id {pair_id!r} (first on line {seen[pair_id]})")
        seen[pair_id] = number
        pairs.append(BitextPair(source, target, source_lang, target_lang, pair_id))
    return pairs


def _check_id(path: str | os.PathLike, number: int, what: str, value: str) -> None:
    """Ids go into whitespace-separated run and qrels files, so whitespace inside one cannot be written back."""
    if has_whitespace(value):
        raise InputFileError(path, number, f"{what} {value!r} contains whitespace (ids must be single tokens)")


def _json_object(path: str | os.PathLike, number: int, line: str) -> dict:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InputFileError(path, number, f"invalid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(record, dict):
        raise InputFileError(path, number, f"expected a JSON object, got {type(record).__name__}")
    return record


def _string_field(path: str | os.PathLike, number: int, record: dict, key: str, allow_empty: bool = False) -> str:
    if key not in record:
        raise InputFileError(path, number, f"missing field {key!r}")
    value = record[key]
    if not isinstance(value, str):
        # Ids stay str end to end: a JSON number is refused rather than cast (leading zeros would be lost).
        raise InputFileError(path, number, f"field {key!r} must be a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise InputFileError(path, number, f"field {key!r} is empty")
    return value
