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


# -- runs written query by query, and the searcher's threads ------------------------------------------------


def test_write_run_stream_writes_the_bytes_of_write_run_and_refuses_unordered_qids(tmp_path):
    from clir_eval.retrieval.runs import write_run, write_run_stream

    run = {"q2": [("d1", 1.5), ("d2", 1.5), ("d3", 0.1)], "q10": [("d9", 2.0000001192092896)], "q3": []}
    write_run(tmp_path / "dict.run", run, tag="t", depth=2)
    assert write_run_stream(tmp_path / "stream.run", sorted(run.items()), tag="t", depth=2) == 3
    assert (tmp_path / "stream.run").read_bytes() == (tmp_path / "dict.run").read_bytes()
    for bad in ([("q2", []), ("q10", [])], [("q1", []), ("q1", [])]):
        with pytest.raises(ValueError, match="increasing qid order"):
            write_run_stream(tmp_path / "bad.run", bad, tag="t")
    assert not (tmp_path / "bad.run").exists()  # atomic: nothing left behind


def test_ordered_map_keeps_order_bounds_the_window_and_raises_in_the_consumer():
    import threading

    from clir_eval.retrieval.bm25 import _ordered_map

    read = []

    def items():
        for n in range(50):
            read.append(n)
            yield n

    exits = []
    out = []
    for value in _ordered_map(lambda n: n * n, items(), threads=3, thread_exit=lambda: exits.append(1)):
        out.append(value)
        assert len(read) <= len(out) + 4 * 3  # never more than the window ahead of the consumer
    assert out == [n * n for n in range(50)] and len(exits) == 3

    def fail(n):
        if n == 7:
            raise KeyError(n)
        return n

    with pytest.raises(KeyError):
        list(_ordered_map(fail, range(20), threads=2))
    assert not [t for t in threading.enumerate() if t.name.startswith("bm25-search")]


def _reference_hits(index_dir, queries, k):
    """What ``Bm25Searcher.search`` returned before the searcher was rewritten: Pyserini's
    ``LuceneSearcher.batch_search`` for text, ``search`` one by one for weighted queries, one Python
    object per hit."""
    from clir_eval.retrieval.analysis import INDEX_ANALYZER, java_analyzer
    from clir_eval.retrieval.bm25 import weighted_query

    java_analyzer(INDEX_ANALYZER)
    from pyserini.search.lucene import LuceneSearcher

    searcher = LuceneSearcher(str(index_dir))
    searcher.set_bm25(0.9, 0.4)
    results = {q.qid: [] for q in queries}
    text = [q for q in queries if not q.is_weighted]
    for qid, hits in searcher.batch_search([q.text for q in text], [q.qid for q in text], k=k, threads=1).items():
        results[str(qid)] = [(str(h.docid), float(h.score)) for h in hits]
    for query in queries:
        if query.is_weighted and query.terms:
            results[query.qid] = [(str(h.docid), float(h.score)) for h in searcher.search(weighted_query(query.terms), k=k)]
    searcher.close()
    return results


@pytest.mark.slow
def test_index_streams_a_keyed_corpus_once_and_queries_without_hits_write_nothing(index, tmp_path):
    from clir_eval.retrieval.bm25 import Bm25Searcher, build_lucene_index
    from clir_eval.retrieval.runs import write_run

    reads = []

    def stream():
        for doc in DOCS:
            reads.append(doc.docid)
            yield doc

    first = build_lucene_index(stream(), tmp_path / "keyed", corpus_sha256="key-1")
    assert (first.num_docs, first.corpus_sha256, reads) == (5, "key-1", [d.docid for d in DOCS])
    assert build_lucene_index(stream(), tmp_path / "keyed", corpus_sha256="key-1").reused
    assert len(reads) == 5  # a reused index does not read the corpus
    with pytest.raises(ValueError, match="empty corpus"):
        build_lucene_index(iter(()), tmp_path / "empty", corpus_sha256="key-2")
    assert not (tmp_path / "empty").exists()

    queries = [TranslatedQuery("q2", text="zzzz"), TranslatedQuery("q1", text="Cats on mats bank"),
               TranslatedQuery("q3", terms=()), TranslatedQuery("q0", text="the of")]  # the last: stopwords only
    write_run(tmp_path / "today.run", _reference_hits(index.path, queries, 3), tag="t", depth=3)
    searcher = Bm25Searcher(index.path, Bm25Config(threads=2))
    assert searcher.write_run(queries, tmp_path / "new.run", tag="t", k=3) == 4
    assert searcher.search(queries, k=3) == {**_reference_hits(index.path, queries, 3)}
    assert searcher.search(queries, k=3)["q2"] == []
    text = (tmp_path / "new.run").read_text()
    assert text == (tmp_path / "today.run").read_text() and {line.split()[0] for line in text.splitlines()} == {"q1"}
    with pytest.raises(ValueError, match="duplicate qids"):
        searcher.write_run(queries + queries[:1], tmp_path / "dup.run", tag="t")
    searcher.close()


@pytest.mark.slow
def test_ntrex_runs_are_the_bytes_the_batch_search_path_wrote(tmp_path):
    """bm25-oracle and bm25-psq on NTREX sw (1,327 queries, up to 1,000 hits): the run written query by query
    on 1 and 3 threads is byte for byte the run of the old path (batch_search, one object per hit, write_run)."""
    from clir_eval.collections.registry import load_collection
    from clir_eval.retrieval.bm25 import Bm25Searcher
    from clir_eval.retrieval.runs import write_run
    from clir_eval.retrieval.systems import IndexDirs, SystemOptions, _bm25_queries, parse_system, run_system

    ntrex = load_collection("ntrex")
    indexes = IndexDirs.under(tmp_path / "indexes")
    # PSQ learned from NTREX's own dev bitext (small, and disjoint from the test topics' documents).
    options = SystemOptions(psq_bitext=(("ntrex", "dev"),), bm25=Bm25Config(threads=3))
    for system in ("bm25-oracle", "bm25-psq"):
        spec = parse_system(system)
        new = run_system(spec, ntrex, "sw", indexes=indexes, out_path=tmp_path / f"{system}.run", options=options)
        queries = _bm25_queries(spec, ntrex, "sw", ntrex.topics("sw", "test"), "test", indexes, options)
        if system == "bm25-psq":
            assert all(q.is_weighted for q in queries)
        write_run(tmp_path / "today.run", _reference_hits(indexes.lucene, queries, 1000), tag=system, depth=1000)
        today = (tmp_path / "today.run").read_bytes()
        assert new.read_bytes() == today, system
        assert len(today.splitlines()) > 100_000
        one = Bm25Searcher(indexes.lucene, Bm25Config(threads=1))
        one.write_run(queries, tmp_path / "one.run", tag=system)
        one.close()
        assert (tmp_path / "one.run").read_bytes() == today, system
