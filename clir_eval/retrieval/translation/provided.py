"""Translations someone already made: a user's file of English queries, or the collection's human English topics."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from clir_eval.collections.records import Topic
from clir_eval.io import InputFileError, sha256_file
from clir_eval.retrieval.translation.base import TranslatedQuery


def read_translation_file(path: str | os.PathLike) -> dict[str, str]:
    """Read ``qid<TAB>english text`` lines (blank lines skipped), with the topics reader's checks.

    Raises:
        InputFileError: a line without exactly one tab, an empty qid or text, a duplicate qid, an empty
            file, or invalid UTF-8 -- naming the file and line.
    """
    from clir_eval.collections.readers import read_qid_text_tsv

    translations = dict(read_qid_text_tsv(path, text_name="translation"))
    if not translations:
        raise InputFileError(path, None, "no translations in file")
    return translations


class FileTranslator:
    """Pre-translated topics from a TSV file ``qid<TAB>english text`` (e.g. the output of an MT system run elsewhere).

    Every topic must have a line; extra lines (qids not asked for) are allowed, so one file can serve
    several splits.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.translations = read_translation_file(self.path)

    def translate(self, topics: list[Topic]) -> list[TranslatedQuery]:
        missing = [t.qid for t in topics if t.qid not in self.translations]
        if missing:
            shown = ", ".join(repr(q) for q in missing[:5])
            raise InputFileError(self.path, None, f"no translation for {len(missing)} topic(s): {shown}")
        return [TranslatedQuery(t.qid, text=self.translations[t.qid]) for t in topics]

    def describe(self) -> dict[str, Any]:
        return {"provider": "file", "path": str(self.path), "sha256": sha256_file(self.path)}


class OracleTranslator:
    """The human English version of each topic (same qid), e.g. ``collection.topics("en", split)``."""

    def __init__(self, english_topics: list[Topic] | Mapping[str, str]) -> None:
        if isinstance(english_topics, Mapping):
            self.translations = dict(english_topics)
        else:
            self.translations = {t.qid: t.text for t in english_topics}

    def translate(self, topics: list[Topic]) -> list[TranslatedQuery]:
        missing = [t.qid for t in topics if t.qid not in self.translations]
        if missing:
            raise KeyError(f"no English (oracle) topic for {len(missing)} qid(s): {', '.join(map(repr, missing[:5]))}")
        return [TranslatedQuery(t.qid, text=self.translations[t.qid]) for t in topics]

    def describe(self) -> dict[str, Any]:
        return {"provider": "oracle", "queries": len(self.translations)}
