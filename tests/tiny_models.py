"""Tiny randomly initialised BERT models built offline inside tests (no hub, no real weights)."""

from __future__ import annotations

from pathlib import Path

WORDS = (
    "the a of and to in is was for on that with as by at from it be this are "
    "cat dog mat sat house car river bank money market stock fell rose today news "
    "paka mbwa nyumba gari mto benki pesa soko leo habari ya na kwa ni "
    "kare gida mota kogi kudi kasuwa yau labarai "
    "water food school health city country president government election people "
    "maji chakula shule afya mji nchi rais serikali uchaguzi watu"
).split()



def word_pairs(n: int, seed: int = 0) -> list:
    """``n`` sw-en BitextPairs of WORDS, the "foreign" side the English words reversed (ids ``p0``, ``p1``, ...)."""
    import random

    from clir_eval.collections.records import BitextPair

    rng = random.Random(seed)
    pairs = []
    for i in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(2, 14))]
        pairs.append(BitextPair(" ".join(reversed(words)), " ".join(words), "sw", "en", f"p{i}"))
    return pairs


def make_tiny_bert(path: str | Path, hidden_size: int = 32, num_layers: int = 2, seed: int = 0) -> Path:
    """Write a tiny BERT (WordPiece vocabulary over WORDS) loadable with AutoModel/AutoTokenizer."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(set(WORDS)), *[f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"],
             *"abcdefghijklmnopqrstuvwxyz0123456789.,?!'"]
    vocab = {token: i for i, token in enumerate(dict.fromkeys(vocab))}
    tokenizer = BertTokenizerFast(vocab=vocab, do_lower_case=True)
    tokenizer.save_pretrained(path)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=2,
        intermediate_size=hidden_size * 2,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(path)
    return path
