"""Topics, qrels, corpora and bitext: readers, writers, validation and the built-in collections."""
