"""XQuAD-R (LAReQA) to a sentence-retrieval CLIR collection: questions in 11 languages, English sentences.

* corpus: every English candidate sentence (``en.json`` ``sentences``), one document each, with the
  docid ``xqr-a<article>-p<paragraph>-s<sentence>`` (0-based positions in ``en.json``) and a
  ``paragraph_id`` field ``xqr-a<article>-p<paragraph>`` for a paragraph-level variant. Sentences are
  not deduplicated: the official candidate counts (README table) count every sentence, duplicates
  included (ar 1,222 sentences of which 1,220 distinct; zh 1,196 / 1,192); English has none anyway.
* qrels: for each question, the English sentence whose ``sentence_breaks`` span contains the English
  answer's ``answer_start`` (relevance 1), as in LAReQA ("the sentence containing the answer").
* topics: the question in each language under its XQuAD id (identical ids in all 11 files).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from clir_eval.collections.converters.common import (
    copy_file,
    one_line,
    provenance,
    relative,
    write_manifest,
)
from clir_eval.collections.records import Document, Qrel, Topic
from clir_eval.collections.writers import write_corpus, write_qrels, write_topics
from clir_eval.io import InputFileError, atomic_directory

logger = logging.getLogger(__name__)

NAME = "xquad-r"
LANGUAGES = ("ar", "de", "el", "en", "es", "hi", "ru", "th", "tr", "vi", "zh")
ORACLE = "en"
# A convention of this suite, not a measurement (see docs/collections.md): Hindi is "low" everywhere.
GROUPS = {"high": ["ar", "de", "el", "es", "ru", "th", "tr", "vi", "zh"], "low": ["hi"]}
SPLIT = "test"
CITATION = """@inproceedings{roy-etal-2020-lareqa,
    title = "{LAReQA}: Language-Agnostic Answer Retrieval from a Multilingual Pool",
    author = "Roy, Uma and Constant, Noah and Al-Rfou, Rami and Barua, Aditya and Phillips, Aaron and Yang, Yinfei",
    booktitle = "Proceedings of the 2020 Conference on Empirical Methods in Natural Language Processing (EMNLP)",
    year = "2020",
    publisher = "Association for Computational Linguistics",
    url = "https://aclanthology.org/2020.emnlp-main.477",
    pages = "5919--5930",
}
@inproceedings{artetxe-etal-2020-cross,
    title = "On the Cross-lingual Transferability of Monolingual Representations",
    author = "Artetxe, Mikel and Ruder, Sebastian and Yogatama, Dani",
    booktitle = "Proceedings of the 58th Annual Meeting of the Association for Computational Linguistics",
    year = "2020",
    publisher = "Association for Computational Linguistics",
    url = "https://aclanthology.org/2020.acl-main.421",
    pages = "4623--4637",
}
"""


def _load(path: Path) -> list[dict]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))["data"]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError) as exc:
        raise InputFileError(path, None, f"not an XQuAD-R JSON file ({exc})") from None


def sentence_docid(article: int, paragraph: int, sentence: int) -> str:
    """Stable docid of an English candidate sentence from its position in ``en.json``."""
    return f"{paragraph_id(article, paragraph)}-s{sentence:02d}"


def paragraph_id(article: int, paragraph: int) -> str:
    """Stable id of an English paragraph (the context a sentence comes from)."""
    return f"xqr-a{article:02d}-p{paragraph:02d}"


def convert(source: Path, dest_root: Path) -> dict[str, int]:
    """Convert ``source`` (the ``xquad-r`` folder holding ``xquad-r/<lang>.json``) under ``dest_root``.

    Returns the measured counts (documents, relevant judgements, topics per language, answers that
    run past their sentence).
    """
    files = {lang: source / "xquad-r" / f"{lang}.json" for lang in LANGUAGES}
    english = _load(files[ORACLE])
    documents: list[Document] = []
    extra: dict[str, dict[str, str]] = {}
    qrels: list[Qrel] = []
    crossing = 0
    for a, article in enumerate(english):
        for p, para in enumerate(article["paragraphs"]):
            context, breaks, sentences = para["context"], para["sentence_breaks"], para["sentences"]
            if len(breaks) != len(sentences):
                raise InputFileError(
                    files[ORACLE], None, f"article {a} paragraph {p}: breaks and sentences differ in number"
                )
            for s, sentence in enumerate(sentences):
                docid = sentence_docid(a, p, s)
                documents.append(Document(docid, one_line(sentence)))
                extra[docid] = {"paragraph_id": paragraph_id(a, p), "article": article["title"]}
            for qa in para["qas"]:
                if len(qa["answers"]) != 1:
                    raise InputFileError(files[ORACLE], None, f"question {qa['id']}: expected one answer")
                answer = qa["answers"][0]
                start, end = answer["answer_start"], answer["answer_start"] + len(answer["text"])
                if context[start:end] != answer["text"]:
                    raise InputFileError(files[ORACLE], None, f"question {qa['id']}: answer text not at answer_start")
                holding = [s for s, (b0, b1) in enumerate(breaks) if b0 <= start < b1]
                if len(holding) != 1:
                    raise InputFileError(
                        files[ORACLE], None, f"question {qa['id']}: answer_start in {len(holding)} sentences"
                    )
                crossing += sum(1 for b0, b1 in breaks if b0 < end and start < b1) > 1
                qrels.append(Qrel(qa["id"], sentence_docid(a, p, holding[0]), 1))

    topics: dict[str, list[Topic]] = {}
    for lang in LANGUAGES:
        data = english if lang == ORACLE else _load(files[lang])
        topics[lang] = [
            Topic(qa["id"], one_line(qa["question"]), lang)
            for article in data
            for para in article["paragraphs"]
            for qa in para["qas"]
        ]
        if [t.qid for t in topics[lang]] != [q.qid for q in qrels]:
            raise InputFileError(files[lang], None, "question ids differ from en.json's (order or set)")

    collection_dir = dest_root / "collections" / NAME
    topics_dir = dest_root / "topics" / NAME
    qrels_dir = dest_root / "qrels" / NAME
    with atomic_directory(topics_dir) as tmp:
        for lang in LANGUAGES:
            write_topics(tmp / SPLIT / f"{lang}.tsv", topics[lang])
    with atomic_directory(qrels_dir) as tmp:
        write_qrels(tmp / f"{SPLIT}.qrels", qrels)
    with atomic_directory(collection_dir) as tmp:
        write_corpus(tmp / "corpus.jsonl", documents, extra=extra)
        copy_file(source / "LICENSE", tmp / "LICENSE")
        manifest = {
            "name": NAME,
            "description": (
                f"XQuAD-R sentence retrieval, cross-lingual form: the {len(qrels):,} XQuAD questions in "
                f"{len(LANGUAGES)} languages against the {len(documents):,} English candidate sentences; "
                "relevant = the sentence holding the answer start."
            ),
            "source": "https://github.com/google-research-datasets/lareqa (xquad-r/*.json)",
            "licence": "CC BY-SA 4.0",
            "licence_file": "LICENSE",
            "citation": CITATION,
            "corpus": "corpus.jsonl",
            "oracle_lang": ORACLE,
            "groups": GROUPS,
            "splits": {
                SPLIT: {
                    "qrels": relative(qrels_dir / f"{SPLIT}.qrels", collection_dir),
                    "topics": {
                        lang: relative(topics_dir / SPLIT / f"{lang}.tsv", collection_dir) for lang in LANGUAGES
                    },
                }
            },
            "notes": (
                "Docids xqr-a<article>-p<paragraph>-s<sentence> are 0-based positions in en.json; each line also "
                "carries paragraph_id and article. Sentences are not deduplicated (neither are the official counts). "
                f"{crossing} English answers run into the next sentence; only the sentence holding the answer start is relevant."
            ),
            "provenance": provenance(source, list(files.values()) + [source / "LICENSE"]),
        }
        write_manifest(tmp / "collection.yaml", manifest)
    counts = {
        "documents": len(documents),
        "relevant": len(qrels),
        "answers_crossing_sentences": crossing,
        **{f"topics_{lang}": len(t) for lang, t in topics.items()},
    }
    logger.info("xquad-r: %s", counts)
    return counts
