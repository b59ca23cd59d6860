"""ir_datasets collections: ``irds:<dataset-id>`` converted once into the project's collection layout.

``irds:<id>`` reads the documents, queries and qrels of an `ir_datasets <https://ir-datasets.com>`_ dataset
through its Python API and writes, under ``<cache root>/collections/irds/<id with / as _>/``::

    collection.yaml        name irds-<id>, source, licence and citation as ir_datasets declares them
    clir_eval_irds.json    the ids converted and the ir_datasets version
    corpus.jsonl           {"id", "contents"}: each document's ``default_text()``
    topics/test/<lang>.tsv qid<TAB>query default_text(), one file per query language
    qrels/test.qrels       TREC qrels

The language of a topics file is the dataset's ``queries_lang()``. Several ids that share one document
collection and differ in query language are joined with ``+`` (``irds:a/sw/test+a/ha/test``): one
topics file each; their documents must be the same (same ids in the same order), their qrels are merged.
The split is always named ``test`` (the id itself names the dataset's split). Conversion happens once: a
directory whose manifest records the same ids is reused.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

from clir_eval.io import atomic_directory, atomic_write

logger = logging.getLogger(__name__)

PREFIX = "irds:"
SPLIT = "test"
STAMP = "clir_eval_irds.json"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def is_irds(name: object) -> bool:
    """True for ``irds:<dataset-id>`` names."""
    return isinstance(name, str) and name.startswith(PREFIX)


def collection_name(name: str) -> str:
    """File-safe collection name of ``irds:<ids>`` (``irds:hc4/fa/test`` -> ``irds-hc4_fa_test``)."""
    return "irds-" + _UNSAFE.sub("_", name.removeprefix(PREFIX)).strip("_")


def irds_cache_dir() -> Path:
    """``<cache root>/collections/irds`` (the cache root of :func:`clir_eval.models.cache.model_cache_dir`)."""
    from clir_eval.models.cache import model_cache_dir

    return model_cache_dir().parent / "collections" / "irds"


def _dataset_ids(name: str) -> list[str]:
    ids = [part.strip() for part in name.removeprefix(PREFIX).split("+")]
    if not all(ids):
        raise KeyError(f"{name!r}: expected irds:<dataset-id> or irds:<id>+<id>... (ids from https://ir-datasets.com)")
    return ids


def _load(dataset_id: str) -> Any:
    try:
        import ir_datasets
    except ImportError:
        raise KeyError(f"irds:{dataset_id} needs the ir_datasets package: pip install ir_datasets") from None
    try:
        dataset = ir_datasets.load(dataset_id)
    except KeyError:
        raise KeyError(f"irds:{dataset_id}: ir_datasets has no dataset {dataset_id!r} "
                       f"(see https://ir-datasets.com for the ids)") from None
    except OSError as exc:  # some ids fetch metadata on load (requests' errors are OSErrors)
        raise KeyError(f"irds:{dataset_id}: ir_datasets could not fetch it ({exc.__class__.__name__}); "
                       f"download it once on a connected machine (~/.ir_datasets)") from None
    missing = [part for part in ("docs", "queries", "qrels") if not getattr(dataset, f"has_{part}")()]
    if missing:
        raise KeyError(f"irds:{dataset_id} has no {' or '.join(missing)}; a collection needs docs, queries and qrels")
    return dataset


def _documentation(dataset: Any) -> dict[str, Any]:
    """What ir_datasets documents about a dataset (``{}`` for one registered without documentation)."""
    return dict(dataset.documentation() or {}) if hasattr(dataset, "documentation") else {}


def _citation(dataset: Any) -> str:
    """BibTeX of the dataset's ``bibtex_ids`` from ir_datasets' bibliography ("" when it declares none)."""
    import pkgutil

    ids = _documentation(dataset).get("bibtex_ids") or []
    if isinstance(ids, str):
        ids = [ids]
    if not ids:
        return ""
    bib = (pkgutil.get_data("ir_datasets", "docs/bibliography.bib") or b"").decode("utf-8")
    entries = re.split(r"\n(?=@)", bib)
    return "\n".join(entry.strip() for entry in entries for key in ids if re.match(rf"@\w+\{{{re.escape(key)},", entry))


def convert(name: str, dest: Path) -> Path:
    """Write ``irds:<ids>`` into ``dest`` in the collection layout (see the module docstring).

    Raises:
        KeyError: an unknown id, a dataset without docs, queries, qrels or query language; joined ids that
            disagree on their documents or share a query language.
    """
    ids = _dataset_ids(name)
    datasets = [_load(dataset_id) for dataset_id in ids]
    try:
        return _write(name, ids, datasets, dest)
    except OSError as exc:  # ir_datasets downloads the files on first iteration
        raise KeyError(f"{name}: ir_datasets could not read or fetch the data ({exc})") from None


def _write(name: str, ids: list[str], datasets: list[Any], dest: Path) -> Path:
    by_lang: dict[str, str] = {}
    for dataset_id, dataset in zip(ids, datasets):
        lang = dataset.queries_lang()
        if not lang:
            raise KeyError(f"irds:{dataset_id} declares no query language (queries_lang() is None); "
                           f"clir-eval needs one per topics file")
        if lang in by_lang:
            raise KeyError(f"irds:{dataset_id} and irds:{by_lang[lang]} both have {lang!r} queries")
        by_lang[lang] = dataset_id
    documentation = _documentation(datasets[0])
    with atomic_directory(dest) as tmp:
        docids: list[str] = []
        with atomic_write(tmp / "corpus.jsonl") as handle:
            for doc in datasets[0].docs_iter():
                docids.append(doc.doc_id)
                handle.write(json.dumps({"id": doc.doc_id, "contents": doc.default_text()}, ensure_ascii=False) + "\n")
        for dataset_id, dataset in zip(ids[1:], datasets[1:]):
            if dataset.docs_handler() is not datasets[0].docs_handler() and \
                    [doc.doc_id for doc in dataset.docs_iter()] != docids:
                raise KeyError(f"irds:{dataset_id} has other documents than irds:{ids[0]}; join only ids that "
                               f"share one document collection")
        topics: dict[str, str] = {}
        judged: dict[tuple[str, str], int] = {}
        for dataset_id, dataset in zip(ids, datasets):
            lang = dataset.queries_lang()
            with atomic_write(tmp / "topics" / SPLIT / f"{lang}.tsv") as handle:
                for query in dataset.queries_iter():
                    text = " ".join(query.default_text().split())  # tabs and line breaks would break the TSV
                    handle.write(f"{query.query_id}\t{text}\n")
            topics[lang] = f"topics/{SPLIT}/{lang}.tsv"
            for qrel in dataset.qrels_iter():
                key = (qrel.query_id, qrel.doc_id)
                if judged.setdefault(key, int(qrel.relevance)) != int(qrel.relevance):
                    raise KeyError(f"irds:{dataset_id} judges {key} {qrel.relevance}, another id "
                                   f"{judged[key]}: they cannot share one qrels file")
        with atomic_write(tmp / "qrels" / f"{SPLIT}.qrels") as handle:
            for (qid, docid), relevance in sorted(judged.items()):
                handle.write(f"{qid} 0 {docid} {relevance}\n")
        manifest = {
            "name": collection_name(name),
            "description": f"ir_datasets {' + '.join(ids)}, converted by clir-eval. "
                           + re.sub(r"<[^>]+>|\s+", " ", documentation.get("desc", "")).strip(),
            "source": f"https://ir-datasets.com (ids: {', '.join(ids)})",
            "licence": documentation.get("license") or "not declared by ir_datasets: see the source's own terms",
            "citation": _citation(datasets[0]),
            "corpus": "corpus.jsonl",
            "oracle_lang": "en" if "en" in topics and len(topics) > 1 else None,
            "splits": {SPLIT: {"qrels": f"qrels/{SPLIT}.qrels", "topics": topics}},
            "notes": f"Converted from ir_datasets {_irds_version()} by clir_eval.collections.irds.",
        }
        if manifest["oracle_lang"] is None:
            del manifest["oracle_lang"]
        import yaml

        with atomic_write(tmp / "collection.yaml") as handle:
            yaml.safe_dump(manifest, handle, sort_keys=False, allow_unicode=True, width=110)
        with atomic_write(tmp / STAMP) as handle:  # what was converted: a later load reuses only the same ids
            json.dump({"ids": ids, "ir_datasets": _irds_version()}, handle)
    logger.info("converted %s into %s (%d documents, languages %s)", name, dest, len(docids), ", ".join(topics))
    return dest


def irds_collection_dir(name: str) -> Path:
    """The converted directory of ``irds:<ids>``, converting it on first use."""
    from clir_eval.io import read_json_or_none

    ids = _dataset_ids(name)
    dest = irds_cache_dir() / collection_name(name).removeprefix("irds-")
    stamp = read_json_or_none(dest / STAMP)
    if isinstance(stamp, dict) and stamp.get("ids") == ids and (dest / "collection.yaml").is_file():
        return dest
    if dest.exists():
        logger.warning("%s does not hold %s; converting again", dest, name)
    return convert(name, dest)


def _irds_version() -> str:
    import importlib.metadata

    return importlib.metadata.version("ir_datasets")
