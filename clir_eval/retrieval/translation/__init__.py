"""Query translation for BM25: seq2seq MT models, PSQ from bitext, user files and the human oracle."""
