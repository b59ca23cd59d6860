"""LAFAND / MAFAND-MT to a sentence-retrieval CLIR collection: an African-language news sentence finds its English.

* queries: the African side of each language's LAFAND ``test`` pairs (split ``test``) and ``dev`` pairs (split
  ``dev``), qid ``lafand-<lang>-<split>-<line:06d>`` (the line of the LAFAND file, 1-based; the same id as the
  ``lafand`` bitext's pair id for a dev pair). Each language has its own queries (``parallel_topics: false``);
  the oracle topics ``en`` hold the English side of every query of the split under the same qid.
* corpus: every distinct English sentence of the ``en-<xxx>`` folders, all languages and splits (train, dev
  and test), deduplicated after :func:`clir_eval.collections.leakage.normalize` (NFKC, casefold, whitespace).
  Sentences of train splits and of other languages are distractors on purpose. A document's text is the first
  form met (languages sorted by code, then train, dev, test, then line); its docid is ``lfx-`` and the first 12
  hex digits of the SHA-256 of the normalised text, so an id does not move when other sentences are added.
* qrels: a query's relevant document is the one holding its own English translation; a document with the same
  text after normalisation is that same document (dedup), so every query has exactly one relevant document.
* ``fr-*`` folders (other languages, French pivot) and ``en_luo`` (not available, per LAFAND's README) are skipped.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from clir_eval.collections.converters.common import (
    copy_file,
    provenance,
    relative,
    write_manifest,
)
from clir_eval.collections.converters.lafand import LANG_CODES, _citation, read_pairs
from clir_eval.collections.leakage import normalize
from clir_eval.collections.records import Document, Qrel, Topic
from clir_eval.collections.writers import write_corpus, write_qrels, write_topics
from clir_eval.io import InputFileError, atomic_directory

logger = logging.getLogger(__name__)

NAME = "lafand-x"
ORACLE = "en"
QUERY_SPLITS = ("dev", "test")
CORPUS_SPLITS = ("train", "dev", "test")
DOCS_PER_PART = 25_000  # keeps each gzip corpus file well under 5 MiB


def docid(key: str) -> str:
    """Docid of a normalised English sentence: stable however the rest of the corpus changes."""
    return "lfx-" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:12]


def qid(lang: str, split: str, line: int) -> str:
    """Query id of line ``line`` (1-based) of ``<split>.<xxx>`` of ``lang``."""
    return f"lafand-{lang}-{split}-{line:06d}"


def _overlaps(keys: dict[tuple[str, str], list[str]]) -> dict:
    """What the conversion finds: English sentences shared between splits and languages (normalised)."""
    train = {k for (_, split), ks in keys.items() if split == "train" for k in ks}
    dev = {k for (_, split), ks in keys.items() if split == "dev" for k in ks}
    langs_of: dict[str, set[str]] = {}
    for (lang, _), ks in keys.items():
        for k in ks:
            langs_of.setdefault(k, set()).add(lang)
    per_lang: dict[str, dict[str, int]] = {}
    for (lang, split), ks in sorted(keys.items()):
        if split not in QUERY_SPLITS:
            continue
        own_train = set(keys.get((lang, "train"), ()))
        row = per_lang.setdefault(lang, {})
        row[f"{split}_queries"] = len(ks)
        row[f"{split}_english_in_any_train"] = sum(k in train for k in ks)
        row[f"{split}_english_in_own_train"] = sum(k in own_train for k in ks)
        if split == "test":
            row["test_english_in_any_dev"] = sum(k in dev for k in ks)
        row[f"{split}_english_in_other_languages"] = sum(len(langs_of[k]) > 1 for k in ks)
        row[f"{split}_repeated_english_within"] = len(ks) - len(set(ks))
    total = {
        name: sum(row.get(name, 0) for row in per_lang.values())
        for name in sorted({name for row in per_lang.values() for name in row})
    }
    return {
        "english_sentences_in_more_than_one_language": sum(len(ls) > 1 for ls in langs_of.values()),
        "total": total,
        "by_language": per_lang,
    }


def convert(source: Path, dest_root: Path) -> dict:
    """Convert ``source`` (the LAFAND ``data/text_files`` folder) under ``dest_root``; returns the measured counts."""
    unknown = sorted(p.name for p in source.glob("en-*") if p.is_dir() and p.name[3:] not in LANG_CODES)
    if unknown:
        raise InputFileError(source, None, f"LAFAND folders without a language mapping: {', '.join(unknown)}")
    data: dict[tuple[str, str], list[tuple[str, str]]] = {}
    used: list[Path] = []
    for folder_code, lang in sorted(LANG_CODES.items(), key=lambda kv: kv[1]):
        for split in CORPUS_SPLITS:
            pairs, files = read_pairs(source, folder_code, split)
            if pairs:
                data[lang, split] = pairs
                used += files
    keys = {ls: [normalize(en) for _, en in pairs] for ls, pairs in data.items()}

    # First surface form of each normalised sentence, in the fixed order of ``data``.
    text_of: dict[str, str] = {}
    for ls, pairs in data.items():
        for (_, english), key in zip(pairs, keys[ls]):
            text_of.setdefault(key, english)
    ids: dict[str, str] = {}
    for key in text_of:
        ident = docid(key)
        if ident in ids:  # 48 bits over ~1e5 sentences: a collision is unlikely, but never silent
            raise ValueError(f"docid collision {ident}: {text_of[ids[ident]]!r} and {text_of[key]!r}")
        ids[ident] = key
    documents = [Document(ident, text_of[ids[ident]]) for ident in sorted(ids)]

    collection_dir = dest_root / "collections" / NAME
    topics_dir = dest_root / "topics" / NAME
    qrels_dir = dest_root / "qrels" / NAME
    splits = [s for s in QUERY_SPLITS if any(split == s for _, split in data)]
    langs_in = {s: sorted(lang for lang, split in data if split == s) for s in splits}
    with atomic_directory(topics_dir) as tmp:
        for split in splits:
            english: list[Topic] = []
            for lang in langs_in[split]:
                pairs = data[lang, split]
                write_topics(tmp / split / f"{lang}.tsv.gz",
                             [Topic(qid(lang, split, i), src, lang) for i, (src, _) in enumerate(pairs, start=1)])
                english += [Topic(qid(lang, split, i), en, ORACLE) for i, (_, en) in enumerate(pairs, start=1)]
            write_topics(tmp / split / f"{ORACLE}.tsv.gz", english)
    with atomic_directory(qrels_dir) as tmp:
        for split in splits:
            write_qrels(tmp / f"{split}.qrels", [
                Qrel(qid(lang, split, i), docid(key), 1)
                for lang in langs_in[split] for i, key in enumerate(keys[lang, split], start=1)
            ])

    counts = {
        "english_lines": sum(len(p) for p in data.values()),
        "english_distinct_exact": len({en for pairs in data.values() for _, en in pairs}),
        "documents": len(documents),
        "queries": {s: {lang: len(data[lang, s]) for lang in langs_in[s]} for s in splits},
        "overlaps": _overlaps(keys),
    }
    with atomic_directory(collection_dir) as tmp:
        parts = [documents[i : i + DOCS_PER_PART] for i in range(0, len(documents), DOCS_PER_PART)]
        for number, part in enumerate(parts):
            write_corpus(tmp / "corpus" / f"part-{number:02d}.jsonl.gz", part)
        copy_file(source / "LICENSE", tmp / "LICENSE")
        copy_file(source / "SOURCE_README.md", tmp / "SOURCE_README.md")
        manifest = {
            "name": NAME,
            "description": (
                f"LAFAND / MAFAND-MT sentence CLIR: the African side of each language's LAFAND dev and test pairs "
                f"({len(langs_in.get('test', []))} languages) is a query; the corpus is every distinct English "
                f"sentence of LAFAND's en-xx data, all languages and splits ({len(documents):,} documents, "
                "distractors on purpose); relevant = the query's own English translation."
            ),
            "source": "https://github.com/masakhane-io/lafand-mt (data/text_files)",
            "licence": "CC BY-NC 4.0 (non-commercial use only)",
            "licence_file": "SOURCE_README.md",
            "citation": _citation(source / "SOURCE_README.md"),
            "corpus": "corpus",
            "oracle_lang": ORACLE,
            # every LAFAND language is low-resource for CLIR into English in this suite's convention
            "groups": {"low": sorted({lang for split in splits for lang in langs_in[split]})},
            "parallel_topics": False,
            "splits": {
                split: {
                    "qrels": relative(qrels_dir / f"{split}.qrels", collection_dir),
                    "topics": {
                        lang: relative(topics_dir / split / f"{lang}.tsv.gz", collection_dir)
                        for lang in [ORACLE, *langs_in[split]]
                    },
                }
                for split in splits
            },
            "notes": (
                "Each language has its own queries (parallel_topics: false): a language is evaluated on the judgements "
                "of its own qids; the en (oracle) topics hold the English side of every query of the split. "
                "Deduplication and relevance use one normalisation (NFKC, casefold, whitespace), the leakage guard's, "
                "so every query has exactly one relevant document. Train-split English sentences are in the corpus "
                "as distractors; LAFAND train pairs whose English equals a test query's English are refused by the "
                "leakage guard (see counts.overlaps). The dataset licence (CC BY-NC 4.0) is stated in "
                "SOURCE_README.md; LICENSE (GPL-3.0) covers LAFAND's code. Hausa train lines 2768+ come from the "
                "Khamenei corpus (WMT21), Swahili train from Global Voices (OPUS), Yoruba from MENYO-20k, Igbo from "
                "the Igbo News MT corpus, Zulu from Umsuka: cite those too. fr-* folders and en_luo are skipped."
            ),
            "counts": counts,
            "provenance": provenance(source, used + [source / "LICENSE", source / "SOURCE_README.md"]),
        }
        write_manifest(tmp / "collection.yaml", manifest)
    logger.info("lafand-x: %d documents, queries %s", len(documents), counts["queries"])
    return counts
