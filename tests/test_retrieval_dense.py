"""Dense retrieval: Pyserini-layout Faiss indexes, exact search, shards, HNSW, and Pyserini's own CLI on our index."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from clir_eval.collections.records import Document, Topic
from clir_eval.retrieval import dense
from clir_eval.retrieval.dense import DenseIndexConfig, shard_range

DOCS = [
    Document(f"d{i:02d}", text)
    for i, text in enumerate([
        "the cat sat on the mat", "the dog was in the house", "money in the bank", "the river bank water",
        "stock market fell today", "the president of the country", "school food health", "the car was at the river",
        "news from the city today", "people and government election", "water for the people", "the market rose today",
        "a dog and a cat", "health of the president",
    ])
]
QUERIES = [Topic("q1", "cat on the mat", "en"), Topic("q2", "money bank", "en"), Topic("q3", "river water", "en"),
           Topic("q4", "market today", "en")]


def test_shard_range_covers_corpus_contiguously():
    for n in (1, 7, 10):
        for shards in range(1, n + 1):
            ranges = [shard_range(n, i, shards) for i in range(shards)]
            assert ranges[0][0] == 0 and ranges[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    with pytest.raises(ValueError):
        shard_range(10, 2, 2)


def test_dense_index_config_validation():
    with pytest.raises(ValueError, match="flat"):
        DenseIndexConfig(kind="ivf")
    with pytest.raises(ValueError):
        DenseIndexConfig(hnsw_m=0)


@pytest.fixture(scope="module")
def encoders(tiny_bert_dir):
    import torch

    from clir_eval.models.pyserini_adapters import DocumentEncoder, QueryEncoder
    from clir_eval.models.sentence import SentenceEncoder

    torch.set_num_threads(1)
    model = SentenceEncoder.from_pretrained(str(tiny_bert_dir))
    return DocumentEncoder(model, batch_size=4), QueryEncoder(model, batch_size=3)


@pytest.fixture(scope="module")
def flat_index(tmp_path_factory, tiny_bert_dir, encoders):
    path = tmp_path_factory.mktemp("dense") / "flat"
    info = dense.build_dense_index(DOCS, str(tiny_bert_dir), path, encoder=encoders[0])
    return info


def _brute_force(encoders, k):
    doc_vectors = encoders[0].encode([d.contents for d in DOCS])
    query_vectors = encoders[1].encode_batch([q.text for q in QUERIES])
    scores = query_vectors @ doc_vectors.T
    return {q.qid: [DOCS[j].docid for j in np.argsort(-scores[i], kind="stable")[:k]] for i, q in enumerate(QUERIES)}, query_vectors


@pytest.mark.slow
def test_index_has_pyserini_layout_and_reuses(flat_index, tiny_bert_dir, encoders):
    import faiss

    path = flat_index.path
    assert (path / "index").is_file()
    assert (path / "docid").read_text(encoding="utf-8").splitlines() == [d.docid for d in DOCS]
    index = faiss.read_index(str(path / "index"))
    assert index.ntotal == len(DOCS) and isinstance(index, faiss.IndexFlatIP)
    again = dense.build_dense_index(DOCS, str(tiny_bert_dir), path, encoder=encoders[0])
    assert again.reused and dense.read_index_meta(path) == flat_index.meta
    # A record without a field it needs (another format) is no record: the index is rebuilt, not read by key.
    record = json.loads((path / dense.META_FILE).read_text(encoding="utf-8"))
    del record["corpus_sha256"]
    (path / dense.META_FILE).write_text(json.dumps(record), encoding="utf-8")
    assert dense.read_index_meta(path) is None
    rebuilt = dense.build_dense_index(DOCS, str(tiny_bert_dir), path, encoder=encoders[0])
    assert not rebuilt.reused and rebuilt.meta == flat_index.meta
    changed = dense.build_dense_index(DOCS[:-1], str(tiny_bert_dir), path, encoder=encoders[0])
    assert not changed.reused and changed.num_docs == len(DOCS) - 1
    dense.build_dense_index(DOCS, str(tiny_bert_dir), path, encoder=encoders[0])  # restore for the other tests


@pytest.mark.slow
def test_search_dense_is_exact_inner_product(flat_index, encoders):
    expected, query_vectors = _brute_force(encoders, k=5)
    found = dense.search_dense(flat_index.path, [q.qid for q in QUERIES], query_vectors, k=5)
    assert {qid: [d for d, _ in hits] for qid, hits in found.items()} == expected
    # encode_queries gives the same vectors through the adapter's encode_batch
    np.testing.assert_allclose(dense.encode_queries(QUERIES, encoders[1]), query_vectors, atol=1e-6)
    with pytest.raises(ValueError, match="duplicate"):
        dense.search_dense(flat_index.path, ["q", "q"], query_vectors[:2], k=5)


def test_search_leaves_torch_threads_alone(flat_index, encoders):
    # Faiss and torch share one OpenMP runtime: a 1-thread search must not pin later encoders to one core.
    threads = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        _, query_vectors = _brute_force(encoders, k=5)
        dense.search_dense(flat_index.path, [q.qid for q in QUERIES], query_vectors, k=5, threads=1)
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
def test_shards_merge_to_the_unsharded_index(tmp_path, tiny_bert_dir, encoders, flat_index):
    target = tmp_path / "merged"
    for shard_id in range(3):
        dense.build_dense_index(DOCS, str(tiny_bert_dir), target, shard=(shard_id, 3), encoder=encoders[0])
    with pytest.raises(FileNotFoundError):
        dense.merge_dense_shards(target, 4)
    merged = dense.merge_dense_shards(target, 3)
    assert dense.read_index_meta(target) == merged.meta and merged.meta.merged_from_shards == 3
    assert merged.meta.index == {"kind": "flat"} and merged.num_docs == len(DOCS)
    vectors, docids = dense.read_vectors(merged.path)
    reference, reference_ids = dense.read_vectors(flat_index.path)
    assert docids == reference_ids
    np.testing.assert_allclose(vectors, reference, atol=1e-5)


@pytest.mark.slow
def test_hnsw_index_finds_the_exact_neighbours_on_a_tiny_corpus(tmp_path, tiny_bert_dir, encoders):
    import faiss

    info = dense.build_dense_index(DOCS, str(tiny_bert_dir), tmp_path / "hnsw", DenseIndexConfig(kind="hnsw", hnsw_m=8),
                                   encoder=encoders[0])
    assert isinstance(faiss.read_index(str(info.path / "index")), faiss.IndexHNSWFlat)
    expected, query_vectors = _brute_force(encoders, k=3)
    found = dense.search_dense(info.path, [q.qid for q in QUERIES], query_vectors, k=3, ef_search=64)
    assert {qid: [d for d, _ in hits] for qid, hits in found.items()} == expected


@pytest.mark.slow
def test_pyserini_search_cli_reproduces_our_run(tmp_path, flat_index, encoders):
    """``python -m pyserini.search.faiss --index OUR_INDEX`` gives our top-10 (ids and scores) for every query."""
    from clir_eval.retrieval.runs import read_run, sort_hits, write_run

    query_vectors = dense.encode_queries(QUERIES, encoders[1])
    ours_hits = dense.search_dense(flat_index.path, [q.qid for q in QUERIES], query_vectors, k=10)
    write_run(tmp_path / "ours.run", ours_hits, tag="tiny")
    ours = read_run(tmp_path / "ours.run")

    topics = tmp_path / "topics.json"
    topics.write_text(json.dumps({q.qid: {"title": q.text} for q in QUERIES}), encoding="utf-8")
    encoded = dense.write_encoded_queries(tmp_path / "encoded-queries", [q.text for q in QUERIES], query_vectors)
    out = tmp_path / "pyserini.run"
    subprocess.run(
        [sys.executable, "-m", "clir_eval.retrieval.pyserini_cli", "pyserini.search.faiss", "--index",
         str(flat_index.path), "--topics", str(topics), "--encoded-queries", str(encoded), "--output", str(out),
         "--hits", "10"],
        check=True, capture_output=True, cwd=Path(__file__).parent.parent, timeout=300,
    )
    theirs = read_run(out)
    assert set(theirs) == set(ours) == {q.qid for q in QUERIES}
    for qid in ours:
        mine = sort_hits(ours[qid])[:10]
        pys = sort_hits(theirs[qid])[:10]
        assert [d for d, _ in mine] == [d for d, _ in pys]
        # Pyserini writes scores with 6 decimals
        np.testing.assert_allclose([s for _, s in mine], [s for _, s in pys], atol=1e-5)
