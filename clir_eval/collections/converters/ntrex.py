"""NTREX-128 to a document-level CLIR collection: a sentence in language X finds its English news document.

* corpus: the 123 English source documents of WMT19 newstest (``NTREX-128/newstest2019-src.eng.txt``,
  the original English; ``eng-GB/IN/US`` are re-translations), lines grouped by ``DOCUMENT_IDS.tsv``
  (each document a contiguous block), sentences joined with ``\\n``; the docid is NTREX's document id.
* topics: line *i* of each language file is query ``ntrex-<i:04d>`` (1-based), so a qid names the same
  sentence in every language; English (the source) is the oracle.
* qrels: query ``ntrex-<i>`` -> the document holding English line *i* (relevance 1).
* split by document: documents ordered by SHA-256 of ``"<SPLIT_SEED>:<docid>"``, the first
  ``round(DEV_FRACTION * 123)`` are ``dev``, the rest ``test``. The result is written to
  ``split.tsv`` and to per-split topics/qrels; loaders read it, never recompute it.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from clir_eval.collections.converters.common import (
    copy_file,
    one_line,
    provenance,
    read_source_lines,
    relative,
    write_manifest,
)
from clir_eval.collections.records import Document, Qrel, Topic
from clir_eval.collections.writers import open_text_output, write_corpus, write_qrels, write_topics
from clir_eval.io import InputFileError, atomic_directory, has_whitespace

logger = logging.getLogger(__name__)

NAME = "ntrex"
ORACLE = "en"
# Our code (ISO 639-1 where one exists, else ISO 639-3) -> NTREX file name. Explicit: no code guessing.
LANG_FILES = {
    "en": "newstest2019-src.eng.txt",
    "am": "newstest2019-ref.amh.txt",
    "de": "newstest2019-ref.deu.txt",
    "es": "newstest2019-ref.spa.txt",
    "fil": "newstest2019-ref.fil.txt",
    "fr": "newstest2019-ref.fra.txt",
    "ha": "newstest2019-ref.hau.txt",
    "hi": "newstest2019-ref.hin.txt",
    "mr": "newstest2019-ref.mar.txt",
    "ru": "newstest2019-ref.rus.txt",
    "so": "newstest2019-ref.som.txt",
    "sw": "newstest2019-ref.swa.txt",
    "yo": "newstest2019-ref.yor.txt",
    "zh": "newstest2019-ref.zho-CN.txt",
}
GROUPS = {"high": ["de", "es", "fr", "ru", "zh"], "low": ["am", "fil", "ha", "hi", "mr", "so", "sw", "yo"]}
SPLIT_SEED = "clir-eval-ntrex-split-v1"
DEV_FRACTION = 0.3
SPLITS = ("dev", "test")
CITATION = """@inproceedings{federmann-etal-2022-ntrex,
    title = "{NTREX}-128 {--} News Test References for {MT} Evaluation of 128 Languages",
    author = "Federmann, Christian and Kocmi, Tom and Xin, Ying",
    booktitle = "Proceedings of the First Workshop on Scaling Up Multilingual Evaluation",
    month = "nov",
    year = "2022",
    address = "Online",
    publisher = "Association for Computational Linguistics",
    url = "https://aclanthology.org/2022.sumeval-1.4",
    pages = "21--24",
}
@inproceedings{barrault-etal-2019-findings,
    title = "Findings of the 2019 Conference on Machine Translation ({WMT}19)",
    author = "Barrault, Lo{\\"\\i}c and Bojar, Ond{\\v{r}}ej and Costa-juss{\\`a}, Marta R. and Federmann, Christian and Fishel, Mark and Graham, Yvette and Haddow, Barry and Huck, Matthias and Koehn, Philipp and Malmasi, Shervin and Monz, Christof and M{\\"u}ller, Mathias and Pal, Santanu and Post, Matt and Zampieri, Marcos",
    booktitle = "Proceedings of the Fourth Conference on Machine Translation (Volume 2: Shared Task Papers, Day 1)",
    year = "2019",
    address = "Florence, Italy",
    publisher = "Association for Computational Linguistics",
    url = "https://aclanthology.org/W19-5301",
    doi = "10.18653/v1/W19-5301",
    pages = "1--61",
}
"""


def qid(line_number: int) -> str:
    """Query id of NTREX line ``line_number`` (1-based), the same in every language."""
    return f"ntrex-{line_number:04d}"


def split_documents(docids: list[str], seed: str = SPLIT_SEED, dev_fraction: float = DEV_FRACTION) -> dict[str, str]:
    """``{docid: "dev" | "test"}``: a seeded, platform-independent shuffle by SHA-256, the first share is dev."""
    order = sorted(docids, key=lambda d: hashlib.sha256(f"{seed}:{d}".encode()).hexdigest())
    n_dev = round(dev_fraction * len(order))
    return {docid: ("dev" if rank < n_dev else "test") for rank, docid in enumerate(order)}


def convert(source: Path, dest_root: Path) -> dict[str, int]:
    """Convert ``source`` (the NTREX repository folder) under ``dest_root``; returns the measured counts."""
    ids_file = source / "DOCUMENT_IDS.tsv"
    doc_of_line = [one_line(line) for line in read_source_lines(ids_file)]
    n = len(doc_of_line)
    blocks: list[str] = []
    for number, docid in enumerate(doc_of_line, start=1):
        if not docid or has_whitespace(docid):
            raise InputFileError(ids_file, number, f"bad document id {docid!r}")
        if not blocks or blocks[-1] != docid:
            if docid in blocks:
                raise InputFileError(ids_file, number, f"document {docid!r} is not one contiguous block of lines")
            blocks.append(docid)

    files = {lang: source / "NTREX-128" / name for lang, name in LANG_FILES.items()}
    lines: dict[str, list[str]] = {}
    for lang, path in files.items():
        raw = read_source_lines(path)
        if len(raw) != n:
            raise InputFileError(path, None, f"{len(raw)} lines, but DOCUMENT_IDS.tsv has {n}")
        lines[lang] = [one_line(text) for text in raw]
        for number, text in enumerate(lines[lang], start=1):
            if not text:
                raise InputFileError(path, number, "empty sentence")

    english = lines[ORACLE]
    documents = [
        Document(docid, "\n".join(english[i] for i in range(n) if doc_of_line[i] == docid)) for docid in blocks
    ]
    split_of_doc = split_documents(blocks)
    split_of_line = [split_of_doc[doc_of_line[i]] for i in range(n)]

    collection_dir = dest_root / "collections" / NAME
    topics_dir = dest_root / "topics" / NAME
    qrels_dir = dest_root / "qrels" / NAME
    counts: dict[str, int] = {"documents": len(documents), "sentences": n}
    with atomic_directory(topics_dir) as tmp:
        for split in SPLITS:
            for lang in LANG_FILES:
                topics = [Topic(qid(i + 1), lines[lang][i], lang) for i in range(n) if split_of_line[i] == split]
                write_topics(tmp / split / f"{lang}.tsv", topics)
            counts[f"{split}_queries"] = sum(1 for s in split_of_line if s == split)
            counts[f"{split}_documents"] = sum(1 for s in split_of_doc.values() if s == split)
    with atomic_directory(qrels_dir) as tmp:
        for split in SPLITS:
            write_qrels(
                tmp / f"{split}.qrels",
                [Qrel(qid(i + 1), doc_of_line[i], 1) for i in range(n) if split_of_line[i] == split],
            )
    with atomic_directory(collection_dir) as tmp:
        write_corpus(tmp / "corpus.jsonl", documents)
        with open_text_output(tmp / "split.tsv") as handle:
            handle.write("docid\tsplit\n")
            for docid in blocks:
                handle.write(f"{docid}\t{split_of_doc[docid]}\n")
        copy_file(source / "LICENSE.md", tmp / "LICENSE.md")
        manifest = {
            "name": NAME,
            "description": (
                f"NTREX-128 document CLIR: each of the {n:,} WMT19 newstest sentences, human-translated into "
                f"{len(LANG_FILES) - 1} languages here, is a query; the {len(documents)} English news documents are "
                "the corpus; relevant = the document holding the sentence's English original. Split by document "
                f"into dev ({counts['dev_documents']} documents) and test ({counts['test_documents']})."
            ),
            "source": "https://github.com/MicrosoftTranslator/NTREX (NTREX-128/, DOCUMENT_IDS.tsv)",
            "licence": "CC BY-SA 4.0",
            "licence_file": "LICENSE.md",
            "citation": CITATION,
            "corpus": "corpus.jsonl",
            "oracle_lang": ORACLE,
            "groups": GROUPS,
            "splits": {
                split: {
                    "qrels": relative(qrels_dir / f"{split}.qrels", collection_dir),
                    "topics": {
                        lang: relative(topics_dir / split / f"{lang}.tsv", collection_dir) for lang in LANG_FILES
                    },
                }
                for split in SPLITS
            },
            "bitext_splits": ["dev"],
            "notes": (
                f"Split: documents sorted by sha256('{SPLIT_SEED}:<docid>'), the first round({DEV_FRACTION} x "
                f"{len(blocks)}) are dev (split.tsv). Retrieval is over the full corpus for both splits. The English "
                "oracle query is a sentence copied from its relevant document (an upper bound, not a realistic query). "
                "NTREX file per language: " + ", ".join(f"{lang}={name}" for lang, name in LANG_FILES.items()) + "."
            ),
            "provenance": provenance(source, [ids_file, source / "LICENSE.md", *files.values()]),
        }
        write_manifest(tmp / "collection.yaml", manifest)
    logger.info("ntrex: %s", counts)
    return counts
