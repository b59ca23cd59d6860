"""Writers matching :mod:`clir_eval.collections.readers`; every file goes through :func:`atomic_write`.

Output is deterministic: the same records give byte-identical files (``.gz`` files carry no
timestamp or file name in their header), so converted data can be committed and re-checked.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
from pathlib import Path
from typing import IO, Iterable, Iterator

from clir_eval.collections.records import BitextPair, Document, Qrel, Topic
from clir_eval.io import atomic_write, has_whitespace


@contextlib.contextmanager
def open_text_output(path: str | os.PathLike) -> Iterator[IO[str]]:
    """Atomically write UTF-8 text to ``path``, gzip-compressed (mtime 0, no name) when it ends in ``.gz``."""
    path = Path(path)
    if path.suffix != ".gz":
        with atomic_write(path, "w") as handle:
            yield handle
        return
    import io

    with atomic_write(path, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as zipped:
            with io.TextIOWrapper(zipped, encoding="utf-8", newline="\n") as handle:
                yield handle


def _one_line(value: str, what: str) -> str:
    if "\t" in value or "\n" in value or "\r" in value:
        raise ValueError(f"{what} {value!r} contains a tab or line break; the TSV/TREC format cannot hold it")
    return value


def write_topics(path: str | os.PathLike, topics: Iterable[Topic]) -> None:
    """Write ``qid<TAB>text`` lines (the TSV topics format), in the given order."""
    with open_text_output(path) as handle:
        for topic in topics:
            if not topic.text.strip():
                raise ValueError(f"topic {topic.qid!r} has empty text")
            handle.write(f"{_one_line(topic.qid, 'qid')}\t{_one_line(topic.text, 'query text')}\n")


def write_qrels(path: str | os.PathLike, qrels: Iterable[Qrel]) -> None:
    """Write TREC qrels lines ``qid 0 docid relevance``, in the given order."""
    with open_text_output(path) as handle:
        for qrel in qrels:
            for value, what in ((qrel.qid, "qid"), (qrel.docid, "docid")):
                if not value or has_whitespace(value):
                    raise ValueError(f"{what} {value!r} is empty or contains whitespace; TREC qrels cannot hold it")
            handle.write(f"{qrel.qid} 0 {qrel.docid} {int(qrel.relevance)}\n")


def write_corpus(
    path: str | os.PathLike, documents: Iterable[Document], extra: dict[str, dict[str, str]] | None = None
) -> None:
    """Write Pyserini JsonCollection JSONL (``.gz`` compressed when the name says so).

    ``extra`` maps a docid to additional fields stored on its line (e.g. ``paragraph_id``); the
    reader ignores them, other tools may use them.
    """
    with open_text_output(path) as handle:
        for doc in documents:
            record: dict[str, str] = {"id": doc.docid}
            if doc.title:
                record["title"] = doc.title
            record["contents"] = doc.contents
            if extra and doc.docid in extra:
                record.update(extra[doc.docid])
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def write_bitext(path: str | os.PathLike, pairs: Iterable[BitextPair]) -> None:
    """Write JSONL ``{"id", "source", "target"}``; name the file ``<src>-<tgt>.<rest>`` so readers know the languages.

    All pairs must share one language pair; JSON escaping keeps tabs and line breaks in sentences safe.
    """
    langs: tuple[str, str] | None = None
    with open_text_output(path) as handle:
        for pair in pairs:
            if langs is None:
                langs = (pair.source_lang, pair.target_lang)
            elif langs != (pair.source_lang, pair.target_lang):
                raise ValueError(
                    f"mixed language pairs in one bitext file: {langs} and {(pair.source_lang, pair.target_lang)}"
                )
            if not pair.pair_id:
                raise ValueError("every bitext pair needs a pair_id")
            record = {"id": pair.pair_id, "source": pair.source, "target": pair.target}
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
