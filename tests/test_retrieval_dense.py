"""Dense retrieval: Pyserini-layout Faiss indexes, exact search, parts, resume, Faiss factory strings, and
Pyserini's own CLI on our index."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from clir_eval.collections.records import Document, Topic
from clir_eval.retrieval import dense
from clir_eval.retrieval.dense import DenseIndexConfig

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


def test_dense_index_config_validation():
    with pytest.raises(ValueError, match="flat"):
        DenseIndexConfig(kind="ivf")
    with pytest.raises(ValueError, match="factory"):
        DenseIndexConfig(factory=" ")
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


class _CountingEncoder:
    """A document encoder that counts the documents it encodes and can fail after ``fail_after`` calls."""

    def __init__(self, inner, fail_after=None):
        self.inner, self.fail_after, self.calls, self.documents = inner, fail_after, 0, 0
        self.model = inner.model

    def encode(self, texts, titles=None, **kwargs):
        if self.fail_after is not None and self.calls == self.fail_after:
            raise KeyboardInterrupt("killed")
        self.calls += 1
        self.documents += len(texts)
        return self.inner.encode(texts, titles=titles)


def test_parts_encoded_apart_build_the_single_process_index(tmp_path, tiny_bert_dir, encoders, flat_index):
    target = tmp_path / "parts"
    config = DenseIndexConfig(chunk_size=4)
    sha = dense.documents_sha256(DOCS)
    for rank in (2, 0):  # not all parts yet: the index cannot be built
        dense.encode_corpus(DOCS, str(tiny_bert_dir), target, config, corpus_sha256=sha, encoder=encoders[0],
                            part=(rank, 3))
    with pytest.raises(ValueError, match="not encoded yet"):
        dense.finalize_dense_index(target, config)
    dense.encode_corpus(DOCS, str(tiny_bert_dir), target, config, corpus_sha256=sha, encoder=encoders[0], part=(1, 3))
    merged = dense.finalize_dense_index(target, config, encoded_by=3)
    assert merged.meta.encoded_by == 3 and merged.num_docs == len(DOCS)
    assert not dense.vectors_dir(target).exists()  # the encoded chunks are removed once the index holds them
    vectors, docids = dense.read_vectors(merged.path)
    reference, reference_ids = dense.read_vectors(flat_index.path)
    assert docids == reference_ids
    np.testing.assert_allclose(vectors, reference, atol=1e-6)
    # the merged index is what a one-process build asks for, so such a build reuses it
    again = dense.build_dense_index(DOCS, str(tiny_bert_dir), target, config, encoder=encoders[0])
    assert again.reused


def test_a_killed_build_resumes_from_its_chunks_and_gives_the_same_index(tmp_path, tiny_bert_dir, encoders):
    config = DenseIndexConfig(chunk_size=3)  # 14 documents: 5 chunks
    whole = dense.build_dense_index(DOCS, str(tiny_bert_dir), tmp_path / "whole", config, encoder=encoders[0])
    target = tmp_path / "killed"
    dying = _CountingEncoder(encoders[0], fail_after=3)
    with pytest.raises(KeyboardInterrupt):
        dense.build_dense_index(DOCS, str(tiny_bert_dir), target, config, encoder=dying)
    assert not target.exists() and dying.documents == 9
    resumed = _CountingEncoder(encoders[0])
    info = dense.build_dense_index(DOCS, str(tiny_bert_dir), target, config, encoder=resumed)
    assert resumed.documents == len(DOCS) - 9  # only the chunks the killed build had not written
    vectors, docids = dense.read_vectors(info.path)
    reference, reference_ids = dense.read_vectors(whole.path)
    assert docids == reference_ids
    assert np.array_equal(vectors, reference)


def test_chunks_of_another_model_or_corpus_are_not_reused(tmp_path, tiny_bert_dir, encoders):
    config = DenseIndexConfig(chunk_size=5)
    target = tmp_path / "index"
    dying = _CountingEncoder(encoders[0], fail_after=1)
    with pytest.raises(KeyboardInterrupt):
        dense.build_dense_index(DOCS[::-1], str(tiny_bert_dir), target, config, encoder=dying)
    fresh = _CountingEncoder(encoders[0])
    dense.build_dense_index(DOCS, str(tiny_bert_dir), target, config, encoder=fresh)
    assert fresh.documents == len(DOCS)


def test_factory_strings_build_ivf_and_quantised_indexes_pyserini_reads(tmp_path, tiny_bert_dir, encoders):
    import faiss

    expected, query_vectors = _brute_force(encoders, k=3)
    config = DenseIndexConfig(factory="IVF2,Flat", nprobe=2, keep_vectors=True)
    info = dense.build_dense_index(DOCS, str(tiny_bert_dir), tmp_path / "ivf", config, encoder=encoders[0])
    assert isinstance(faiss.read_index(str(info.path / "index")), faiss.IndexIVFFlat)
    assert info.meta.index["factory"] == "IVF2,Flat"
    # every list probed: an IVF-Flat search is exact
    found = dense.search_dense(info.path, [q.qid for q in QUERIES], query_vectors, k=3, nprobe=2)
    assert {qid: [d for d, _ in hits] for qid, hits in found.items()} == expected
    # the kept vectors build a scalar-quantised index without encoding again
    counting = _CountingEncoder(encoders[0])
    sq = dense.build_dense_index(DOCS, str(tiny_bert_dir), tmp_path / "ivf",
                                 DenseIndexConfig(factory="IVF2,SQ8", nprobe=2, keep_vectors=True), encoder=counting)
    assert counting.documents == 0 and isinstance(faiss.read_index(str(sq.path / "index")), faiss.IndexIVFScalarQuantizer)
    found = dense.search_dense(sq.path, [q.qid for q in QUERIES], query_vectors, k=1, nprobe=2)
    assert {qid: [d for d, _ in hits] for qid, hits in found.items()} == {q: e[:1] for q, e in expected.items()}
    # ... and an index elsewhere reads that encoding through `vectors`, the flat one staying where it is
    elsewhere = dense.build_dense_index(DOCS, str(tiny_bert_dir), tmp_path / "hnsw",
                                        DenseIndexConfig(kind="hnsw", hnsw_m=8, keep_vectors=True,
                                                         vectors=str(dense.vectors_dir(tmp_path / "ivf"))),
                                        encoder=counting)
    assert counting.documents == 0 and isinstance(faiss.read_index(str(elsewhere.path / "index")), faiss.IndexHNSWFlat)
    assert (tmp_path / "ivf" / "index").is_file()


def test_hits_are_pyserinis_batch_search_hits_empty_slots_dropped(tmp_path, tiny_bert_dir, encoders):
    """Our batch_search reads Faiss directly (no result object per hit): the hits, ids, scores and order, equal
    Pyserini's FaissSearcher.batch_search, also where one IVF list cannot fill k and Faiss pads with id -1."""
    _, query_vectors = _brute_force(encoders, k=3)
    config = DenseIndexConfig(factory="IVF2,Flat", nprobe=1)
    info = dense.build_dense_index(DOCS, str(tiny_bert_dir), tmp_path / "ivf", config, encoder=encoders[0])
    qids = [q.qid for q in QUERIES]
    searcher = dense.open_dense_searcher(info.path, nprobe=1)
    ours = dense.batch_search(searcher, qids, query_vectors, k=len(DOCS))
    theirs = searcher.batch_search(query_vectors, qids, k=len(DOCS))
    assert ours == {q: [(hit.docid, float(hit.score)) for hit in theirs[q]] for q in qids}
    assert any(len(hits) < len(DOCS) for hits in ours.values())  # one list probed: some slots were empty


def test_a_bad_factory_string_fails_before_any_encoding(tmp_path, tiny_bert_dir, encoders):
    counting = _CountingEncoder(encoders[0])
    with pytest.raises(ValueError, match="IVF2,PQ5"):
        dense.build_dense_index(DOCS, str(tiny_bert_dir), tmp_path / "bad", DenseIndexConfig(factory="IVF2,PQ5"),
                                encoder=counting)
    assert counting.documents == 0 and not (tmp_path / "bad").exists()


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


def _tiny_collection(root):
    from clir_eval.collections.records import Qrel
    from clir_eval.collections.writers import write_corpus, write_qrels, write_topics

    write_corpus(root / "corpus.jsonl", DOCS)
    write_qrels(root / "qrels.txt", [Qrel(q.qid, "d00", 1) for q in QUERIES])
    write_topics(root / "topics" / "en.tsv", QUERIES)
    return root


def test_all_cores_under_a_launcher_are_shared_among_its_processes(monkeypatch):
    """``--threads 0`` is every core for one process; two processes a machine get half each instead of both
    asking for every core (which oversubscribes them)."""
    from clir_eval.launcher import set_threads

    before = torch.get_num_threads()
    monkeypatch.setattr("os.cpu_count", lambda: 4)
    try:
        monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
        assert set_threads(0) == 4 and torch.get_num_threads() == 4
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
        assert set_threads(0) == 2 and torch.get_num_threads() == 2
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
        assert set_threads(0) == 1
        assert set_threads(3) == 3  # a count given is kept
    finally:
        torch.set_num_threads(before)


@pytest.mark.slow
def test_two_processes_under_torchrun_build_the_one_process_index(tmp_path, tiny_bert_dir):
    """``torchrun --nproc-per-node 2`` (gloo on CPU): each rank encodes its chunks, rank 0 builds the index, and
    the index equals a one-process build of the same command."""
    collection = _tiny_collection(tmp_path / "coll")
    command = ["-m", "clir_eval", "index", "dense", "--collection", str(collection), "--model", str(tiny_bert_dir),
               "--chunk-size", "3", "--threads", "1"]
    torchrun = Path(sys.executable).parent / "torchrun"
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    two = subprocess.run([str(torchrun), "--standalone", "--nproc-per-node", "2", *command,
                          "--out", str(tmp_path / "two")], capture_output=True, text=True, env=env, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run([sys.executable, *command, "--out", str(tmp_path / "one")], capture_output=True, text=True,
                         env=env, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    assert dense.read_index_meta(tmp_path / "two").encoded_by == 2
    vectors_two, ids_two = dense.read_vectors(tmp_path / "two")
    vectors_one, ids_one = dense.read_vectors(tmp_path / "one")
    assert ids_two == ids_one == [d.docid for d in DOCS]
    assert np.array_equal(vectors_two, vectors_one)


def test_k_factor_lets_a_refined_pq_index_re_score_its_way_to_exact_hits():
    """A ``...,RFlat`` index re-scores ``k * k_factor`` product-quantised candidates exactly: at Faiss's default of 1
    it keeps PQ's misses; with enough candidates (every list probed) its top 10 is brute force's."""
    from clir_eval.retrieval.faiss_index import build_index, set_search_params

    rng = np.random.default_rng(0)
    docs = rng.standard_normal((2000, 32)).astype(np.float32)
    queries = rng.standard_normal((50, 32)).astype(np.float32)
    exact = np.argsort(-(queries @ docs.T), axis=1)[:, :10]
    index = build_index("IVF4,PQ8x4fs,RFlat", 32, iter([docs[:1000], docs[1000:]]), train=docs, threads=1)

    def recall(k_factor: int) -> float:
        set_search_params(index, nprobe=4, k_factor=k_factor)
        _, rows = index.search(queries, 10)
        return float(np.mean([len(set(row) & set(true)) / 10 for row, true in zip(rows, exact)]))

    assert recall(1) < 0.5
    assert recall(4) < recall(20) < recall(100) == 1.0


def test_the_openvino_backend_encodes_the_torch_vectors_with_several_batches_at_once(tmp_path, tiny_bert_dir):
    """``index dense --backend openvino`` runs the backbone through OpenVINO, several batches at a time: the index
    holds torch's vectors to float32 rounding, in the same order; a setting it cannot honour is one ``error:`` line
    before anything is read or written."""
    pytest.importorskip("openvino")
    from clir_eval.models.pyserini_adapters import DocumentEncoder

    encoder = DocumentEncoder(str(tiny_bert_dir), batch_size=3, backend="openvino", threads=2)
    ran: list[int] = []
    last_hidden_state = encoder.runner.last_hidden_state
    encoder.runner.last_hidden_state = lambda inputs: ran.append(len(inputs["input_ids"])) or last_hidden_state(inputs)
    encoder.runner.streams = 2
    texts = [doc.contents for doc in DOCS]
    torch_vectors = DocumentEncoder(str(tiny_bert_dir), batch_size=3).encode(texts)
    np.testing.assert_allclose(encoder.encode(texts), torch_vectors, atol=1e-5)
    assert sorted(ran, reverse=True) == [3, 3, 3, 3, 2]  # every batch went through OpenVINO

    collection = _tiny_collection(tmp_path / "coll")
    command = [sys.executable, "-m", "clir_eval", "index", "dense", "--collection", str(collection), "--model",
               str(tiny_bert_dir), "--chunk-size", "5", "--threads", "2"]
    for backend in ("torch", "openvino"):
        done = subprocess.run([*command, "--backend", backend, "--out", str(tmp_path / backend)],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    vectors_ov, ids_ov = dense.read_vectors(tmp_path / "openvino")
    vectors_torch, ids_torch = dense.read_vectors(tmp_path / "torch")
    assert ids_ov == ids_torch == [d.docid for d in DOCS]
    np.testing.assert_allclose(vectors_ov, vectors_torch, atol=1e-5)

    for wrong, message in ((["--backend", "openvino", "--precision", "bf16"], "the openvino backend runs on a CPU "
                                                                              "in fp32, not on cpu in bf16"),
                           (["--backend", "onnx"], "backend must be one of torch, openvino, got 'onnx'")):
        refused = subprocess.run([*command, *wrong, "--out", str(tmp_path / "no")], capture_output=True, text=True,
                                 timeout=300)
        assert refused.returncode == 2 and refused.stderr.strip() == f"error: {message}", refused.stderr[-2000:]
        assert not (tmp_path / "no").exists() and not (tmp_path / "no.vectors").exists()
