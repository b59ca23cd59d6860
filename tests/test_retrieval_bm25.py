"""BM25 through Pyserini: Lucene index of the English corpus, k1/b, and weighted (PSQ) queries."""

import pytest

from clir_eval.collections.records import Document
from clir_eval.retrieval.bm25 import Bm25Config
from clir_eval.retrieval.translation.base import TranslatedQuery

DOCS = [
    Document("d1", "the cat sat on the mat"),
    Document("d2", "money in the bank and more money"),
    Document("d3", "the river bank water"),
    Document("d4", "stock market fell today"),
    Document("d5", "the bank of the river was full of water and fish", title="Rivers"),
]


def test_bm25_config_validation():
    with pytest.raises(ValueError):
        Bm25Config(b=1.5)
    with pytest.raises(ValueError):
        Bm25Config(k1=-1)


def test_translated_query_needs_exactly_one_form():
    with pytest.raises(ValueError):
        TranslatedQuery("q")
    with pytest.raises(ValueError):
        TranslatedQuery("q", text="a", terms=(("a", 1.0),))
    with pytest.raises(ValueError, match="weight"):
        TranslatedQuery("q", terms=(("a", 0.0),))


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    from clir_eval.retrieval.bm25 import build_lucene_index

    return build_lucene_index(DOCS, tmp_path_factory.mktemp("lucene") / "index")


@pytest.mark.slow
def test_index_reused_and_rebuilt(index):
    from clir_eval.retrieval.bm25 import build_lucene_index

    assert build_lucene_index(DOCS, index.path).reused
    rebuilt = build_lucene_index(DOCS[:3], index.path)
    assert not rebuilt.reused and rebuilt.num_docs == 3
    build_lucene_index(DOCS, index.path)


@pytest.mark.slow
def test_text_query_search_and_params(index):
    from clir_eval.retrieval.bm25 import search_bm25

    hits = search_bm25(index.path, [TranslatedQuery("q1", text="Cats on mats"), TranslatedQuery("q2", text="zzzz")], k=3)
    assert hits["q1"][0][0] == "d1"  # Porter stemming matches "cats" with "cat"
    assert hits["q2"] == []
    # b=0 removes length normalisation: d2 and d5 then differ only through tf (d5 shorter loses its edge)
    base = dict(search_bm25(index.path, [TranslatedQuery("q", text="bank")], k=5)["q"])
    flat = dict(search_bm25(index.path, [TranslatedQuery("q", text="bank")], k=5, config=Bm25Config(b=0.0))["q"])
    assert set(base) == set(flat) == {"d2", "d3", "d5"}
    assert flat["d3"] == pytest.approx(flat["d5"], rel=1e-4)  # one "bank" each, no length effect
    assert base["d3"] > base["d5"]  # with b=0.4 the shorter document wins


@pytest.mark.slow
def test_weighted_query_scores_are_weighted_sums_of_term_scores(index):
    from clir_eval.retrieval.analysis import TextAnalyzer
    from clir_eval.retrieval.bm25 import search_bm25

    bank, money, water = (TextAnalyzer("en").analyze(w)[0] for w in ("bank", "money", "water"))
    single = {t: dict(search_bm25(index.path, [TranslatedQuery("q", terms=((t, 1.0),))], k=10)["q"])
              for t in (bank, money, water)}
    weights = {bank: 0.7, money: 0.2, water: 1.5}
    combined = dict(search_bm25(index.path, [TranslatedQuery("q", terms=tuple(weights.items()))], k=10)["q"])
    for docid, score in combined.items():
        expected = sum(w * single[t].get(docid, 0.0) for t, w in weights.items())
        assert score == pytest.approx(expected, rel=1e-3)
    assert set(combined) == {"d2", "d3", "d5"}
