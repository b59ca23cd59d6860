"""Typed records shared by every part of the suite. Ids are ``str`` end to end, never cast."""

from __future__ import annotations

from typing import NamedTuple


class Topic(NamedTuple):
    """A query: ``qid`` in language ``lang`` (ISO 639-1/3 code as the collection names it)."""

    qid: str
    text: str
    lang: str


class Qrel(NamedTuple):
    """A relevance judgement (TREC qrels line ``qid 0 docid relevance``)."""

    qid: str
    docid: str
    relevance: int


class Document(NamedTuple):
    """A corpus entry (Pyserini JsonCollection ``{"id", "contents"}``); ``title`` is optional."""

    docid: str
    contents: str
    title: str = ""


class BitextPair(NamedTuple):
    """One aligned sentence pair: ``source`` in ``source_lang``, ``target`` in ``target_lang`` (usually ``en``)."""

    source: str
    target: str
    source_lang: str
    target_lang: str
    pair_id: str = ""
