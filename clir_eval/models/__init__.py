"""Model registry, loading (HF ids, local paths, offline built-ins), pooling and Pyserini-shaped encoders."""
