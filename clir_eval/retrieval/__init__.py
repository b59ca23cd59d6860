"""Retrieval systems: BM25 (+ query translation), dense Faiss search, fusion, TREC run files."""
