"""TREC run files: ``qid Q0 docid rank score tag``, ordered exactly as trec_eval ranks them.

trec_eval ignores the rank column and re-sorts every query's hits by score descending, ties by docid
*descending* (``comp_sim_docno`` in trec_eval's ``form_res_rels.c``: ``strcmp(ptr2->docno, ptr1->docno)``).
:func:`sort_hits` is the one place that order is implemented; :func:`write_run` writes ranks that agree
with it, and :mod:`clir_eval.evaluation` sorts with it before handing runs to ranx (which would otherwise
leave ties to ``np.argsort`` over hashed ids).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

from clir_eval.io import (InputFileError, atomic_write, c_atof, c_number_or_refuse, has_whitespace,
                          read_text_lines)

logger = logging.getLogger(__name__)

#: ``qid -> docid -> score`` (what :func:`read_run` returns and the evaluation code takes).
Run = dict[str, dict[str, float]]
#: Hits of one query: ``{docid: score}``, or a sequence of ``(docid, score)`` pairs (or objects with
#: ``.docid`` and ``.score``, such as Pyserini's search results).
Hits = Union[Mapping[str, float], Sequence[Any]]


@dataclass(frozen=True)
class RunFile:
    """A parsed run file: the scores and the run tag (the sixth column of its first line)."""

    run: Run
    tag: str


def sort_hits(hits: Mapping[str, float] | Iterable[tuple[str, float]]) -> list[tuple[str, float]]:
    """Order hits as trec_eval ranks them: score descending, then docid descending.

    Docids compare as Python strings, i.e. by code point, which is the same order as C ``strcmp`` over
    their UTF-8 bytes. Scores compare as Python floats (C doubles, as trec_eval 10 stores them); the
    evaluation (:func:`clir_eval.evaluation.evaluate.rank_run`) also offers trec_eval 9's float32 comparison.

    Returns:
        ``[(docid, score), ...]`` best first.
    """
    pairs = hits.items() if isinstance(hits, Mapping) else hits  # sorted() copies once; no list() first
    # Both keys descending, so one reverse sort on (score, docid) is exact; -0.0 == 0.0 ties, as in C.
    return sorted(pairs, key=lambda pair: (pair[1], pair[0]), reverse=True)


def _as_pairs(qid: str, hits: Hits) -> list[tuple[str, float]]:
    """Normalise one query's hits to ``[(docid, float score)]``, rejecting duplicates and NaN."""
    if isinstance(hits, Mapping):
        items: Iterable[Any] = hits.items()
    else:
        items = hits
    pairs: list[tuple[str, float]] = []
    seen: set[str] = set()
    for item in items:
        if type(item) is tuple:  # the common case, tested first: hasattr on a tuple raises inside
            docid, score = item
        elif hasattr(item, "docid") and hasattr(item, "score"):
            docid, score = item.docid, item.score
        else:
            docid, score = item
        if not isinstance(docid, str):
            raise TypeError(f"query {qid!r}: docid {docid!r} is {type(docid).__name__}, ids must be str")
        if not docid or has_whitespace(docid):
            raise ValueError(f"query {qid!r}: docid {docid!r} is empty or contains whitespace")
        if docid in seen:
            raise ValueError(f"query {qid!r}: duplicate docid {docid!r}")
        seen.add(docid)
        score = float(score)
        if math.isnan(score):
            raise ValueError(f"query {qid!r}: docid {docid!r} has score NaN")
        pairs.append((docid, score))
    return pairs


def format_score(score: float) -> str:
    """The shortest decimal that reads back as exactly the same double (Python's ``repr``).

    Every float32 is exactly representable as a double, so this also round-trips float32 scores (Lucene's
    BM25, Faiss inner products) bit for bit; a fixed ``%.4f`` or ``%.6g`` would merge nearby scores into ties
    and change the ranking trec_eval computes from the file. ``%.9g`` would round-trip float32 only.
    """
    return repr(float(score))


def check_tag(tag: str) -> str:
    """``tag`` if it can be a run tag (the sixth column): a non-empty string without whitespace."""
    if not isinstance(tag, str) or not tag or has_whitespace(tag):
        raise ValueError(f"run tag must be a non-empty string without whitespace, got {tag!r}")
    return tag


def write_run(path: str | os.PathLike, run: Mapping[str, Hits], tag: str, depth: int | None = None) -> None:
    """Write ``run`` as a TREC run file, atomically and deterministically.

    Queries are written in sorted qid order, hits in :func:`sort_hits` order with ranks 1..n, so the
    same run always gives a byte-identical file and the ranks agree with trec_eval's own ordering.

    Args:
        run: ``{qid: {docid: score}}`` or ``{qid: [(docid, score), ...]}``.
        tag: the run tag (sixth column); required, non-empty, no whitespace.
        depth: keep only the best ``depth`` hits per query (``None``: all).
    """
    check_tag(tag)
    _check_depth(depth)
    for qid in run:
        check_qid(qid)
    with atomic_write(path) as handle:
        for qid in sorted(run):
            handle.write(query_lines(qid, run[qid], tag, depth))


def check_qid(qid: str) -> str:
    """``qid`` if it can be a run's first column: a non-empty ``str`` without whitespace."""
    if not isinstance(qid, str):
        raise TypeError(f"qid {qid!r} is {type(qid).__name__}, ids must be str")
    if not qid or has_whitespace(qid):
        raise ValueError(f"qid {qid!r} is empty or contains whitespace")
    return qid


def _check_depth(depth: int | None) -> None:
    if depth is not None and depth < 1:
        raise ValueError(f"depth must be >= 1 or None, got {depth}")


def query_lines(qid: str, hits: Hits, tag: str, depth: int | None = None) -> str:
    """The lines :func:`write_run` writes for one query: hits in :func:`sort_hits` order, ranks 1..n."""
    ranked = sort_hits(_as_pairs(qid, hits))
    if depth is not None:
        ranked = ranked[:depth]
    return "".join(f"{qid} Q0 {docid} {rank} {format_score(score)} {tag}\n"
                   for rank, (docid, score) in enumerate(ranked, start=1))


def write_run_stream(path: str | os.PathLike, queries: Iterable[tuple[str, Hits]], tag: str,
                     depth: int | None = None, empty_error: str | None = None) -> int:
    """Write ``(qid, hits)`` pairs given in increasing qid order as :func:`write_run` would write the dict
    of them (the same bytes), holding one query at a time.

    Args:
        empty_error: when given, a run in which no query has a hit is not written: ``ValueError(empty_error)``
            (an existing file at ``path`` is left as it was).

    Returns:
        The number of queries written (those without hits write no line, as in :func:`write_run`).

    Raises:
        ValueError: a qid that is not greater than the one before (out of order or repeated); an empty run
            with ``empty_error``.
    """
    check_tag(tag)
    _check_depth(depth)
    count = 0
    answered = False
    previous: str | None = None
    with atomic_write(path) as handle:
        for qid, hits in queries:
            check_qid(qid)
            if previous is not None and qid <= previous:
                raise ValueError(f"qid {qid!r} after {previous!r}: queries must come in increasing qid order, once each")
            previous = qid
            lines = query_lines(qid, hits, tag, depth)
            handle.write(lines)
            count += 1
            answered = answered or bool(lines)
        if empty_error is not None and count and not answered:
            raise ValueError(empty_error)
    return count


def read_run_file(path: str | os.PathLike) -> RunFile:
    """Read a TREC run file (``.gz`` too) into a :class:`RunFile`.

    Columns may be separated by any whitespace (tabs, several spaces, leading spaces); blank lines are
    skipped. The ``Q0`` and rank columns are ignored, as trec_eval ignores them. Scores are read as
    trec_eval's C ``atof`` reads them (:func:`clir_eval.io.c_atof`: ``0_9`` is 0.0, ``0x1p3`` 8.0), with
    one warning naming the first score that Python's ``float`` would have read differently.

    Raises:
        InputFileError: a line without exactly 6 columns, a score no reader sees a number in, a NaN score, a repeated
            ``(qid, docid)``, or no hits at all; naming the file and line.
    """
    run: Run = {}
    tag: str | None = None
    mixed_tags = False
    # The loop is the cost of reading a run (a study reads every run at least twice): names are bound
    # locally and a line's query dict is kept while its qid repeats, as it does in every run file.
    isnan = math.isnan
    qid_now: str | None = None
    hits: dict[str, float] = {}
    odd = 0  # scores that Python's float() and C's atof read differently
    first_odd: tuple[int, str, float] | None = None
    for number, line in read_text_lines(path):
        fields = line.split()
        if len(fields) != 6:
            if not fields:
                continue
            raise InputFileError(
                path, number, f"expected 6 columns 'qid Q0 docid rank score tag', found {len(fields)}"
            )
        qid, _, docid, _, score_text, line_tag = fields
        read = c_atof(score_text)
        if read is None or not read.exact:
            read = c_number_or_refuse(path, number, score_text, read, "score", float)
            if first_odd is None:
                first_odd = (number, score_text, read.value)
            odd += 1
        score = read.value
        if isnan(score):
            raise InputFileError(path, number, "score is NaN")
        if qid != qid_now:
            hits = run.setdefault(qid, {})
            qid_now = qid
        if docid in hits:
            raise InputFileError(path, number, f"duplicate document {docid!r} for query {qid!r}")
        hits[docid] = score
        if line_tag != tag:
            if tag is None:
                tag = line_tag
            elif not mixed_tags:
                # trec_eval ignores the tag; a mixed file is legal but worth a warning (once, not per line).
                logger.warning("%s:%d: run tag %r differs from the first line's %r; keeping %r",
                               path, number, line_tag, tag, tag)
                mixed_tags = True
    if tag is None:
        raise InputFileError(path, None, "run file has no hits")
    if first_odd is not None:
        logger.warning("%s:%d: score %r read as %r, the number C's atof reads at its start, as trec_eval does "
                       "(%d such line(s))", path, first_odd[0], first_odd[1], first_odd[2], odd)
    return RunFile(run=run, tag=tag)


def read_run(path: str | os.PathLike) -> Run:
    """Read a TREC run file into ``{qid: {docid: score}}`` (see :func:`read_run_file` for the rules)."""
    return read_run_file(path).run
