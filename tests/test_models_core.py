"""Registry, loading, pooling, SentenceEncoder and the Pyserini adapters, on tiny offline models."""

import json

import numpy as np
import pytest
import torch

from clir_eval.models.loading import ModelNotAvailableError, load_transformer
from clir_eval.models.pooling import pool
from clir_eval.models.pyserini_adapters import DocumentEncoder, QueryEncoder
from clir_eval.models.registry import ENCODER_CONFIG_NAME, EncoderConfig, list_models, resolve_model
from clir_eval.models.sentence import CPU_BATCH_TOKENS, SentenceEncoder


def test_mean_pooling_ignores_padding():
    tokens = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert torch.allclose(pool(tokens, mask, "mean"), torch.tensor([[2.0, 3.0]]))
    assert torch.allclose(pool(tokens, mask, "cls"), torch.tensor([[1.0, 2.0]]))
    with pytest.raises(ValueError, match="pooling must be one of"):
        pool(tokens, mask, "max")


def test_encoder_config_rejects_unknown_keys_and_values():
    with pytest.raises(ValueError, match="unknown key"):
        EncoderConfig.from_dict({"pooling": "mean", "normalise": True})
    with pytest.raises(ValueError, match="pooling must be one of"):
        EncoderConfig(pooling="avg")


def test_builtins_are_listed_and_resolve_without_loading():
    assert {"minilm-l6", "me5-small"} <= set(list_models())
    spec = resolve_model("me5-small")
    assert spec.encoder.query_prefix == "query: " and spec.encoder.passage_prefix == "passage: "


def test_unknown_hub_id_offline_fails_fast_with_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotAvailableError, match="not in the Hugging Face cache"):
        load_transformer("no-such-org/no-such-model-xyz")


def test_encode_matches_unbatched_forward_and_keeps_input_order(tiny_bert_dir):
    enc = SentenceEncoder.from_pretrained(str(tiny_bert_dir))
    texts = ["the cat sat on the mat today", "paka", "habari ya leo na watu wa mji", "dog"]
    batched = enc.encode(texts, batch_size=2)
    assert batched.dtype == np.float32 and batched.shape == (4, 32)
    with torch.no_grad():
        for i, text in enumerate(texts):
            single = enc(enc.tokenize([text]))["sentence_embedding"][0].numpy()
            np.testing.assert_allclose(batched[i], single, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)


def test_a_cpu_batch_holds_at_most_its_token_budget_and_the_embeddings_do_not_change(tiny_bert_dir):
    enc = SentenceEncoder.from_pretrained(str(tiny_bert_dir))
    words = "the cat sat on the mat dog river bank".split()
    texts = [" ".join(words[(i + j) % len(words)] for j in range(1 + (i * 7) % 130)) for i in range(70)]
    shapes = []
    hook = enc.backbone.embeddings.register_forward_hook(lambda module, args, out: shapes.append(out.shape[:2]))
    try:
        uncapped = enc.encode(texts, role="passage", batch_size=64, batch_tokens=10**9)
        assert shapes[0] == (64, 128)  # the cap is what splits the batches below
        shapes.clear()
        capped = enc.encode(texts, role="passage", batch_size=64, batch_tokens=200)
        assert all(rows * length <= 200 for rows, length in shapes) and len(shapes) > 10
        shapes.clear()
        by_default = enc.encode(texts, role="passage", batch_size=64)  # on a CPU: CPU_BATCH_TOKENS
        assert max(rows * length for rows, length in shapes) <= CPU_BATCH_TOKENS
        assert sum(rows for rows, _ in shapes) == len(texts)
    finally:
        hook.remove()
    np.testing.assert_allclose(capped, uncapped, atol=1e-5)
    np.testing.assert_allclose(by_default, uncapped, atol=1e-5)
    with pytest.raises(ValueError, match="batch_tokens must be >= 1"):
        enc.encode(texts, batch_tokens=0)


def test_prefixes_change_query_and_passage_embeddings(tiny_bert_dir):
    config = EncoderConfig(query_prefix="query: ", passage_prefix="passage: ")
    enc = SentenceEncoder.from_pretrained(str(tiny_bert_dir), encoder=config)
    q = enc.encode(["the river bank"], role="query")
    p = enc.encode(["the river bank"], role="passage")
    assert not np.allclose(q, p)
    with pytest.raises(ValueError, match="role must be one of"):
        enc.encode(["x"], role="document")


def test_save_and_reload_student_with_projection(tiny_bert_dir, tmp_path):
    enc = SentenceEncoder.from_pretrained(str(tiny_bert_dir), encoder=EncoderConfig(pooling="cls", max_length=16))
    enc.add_projection(48, seed=3)
    assert enc.dim == 48
    before = enc.encode(["money market news", "watu"])
    out = enc.save(tmp_path / "student", extra={"method": "kd"})
    meta = json.loads((out / ENCODER_CONFIG_NAME).read_text())
    assert meta["encoder"]["pooling"] == "cls" and meta["extra"] == {"method": "kd"}
    again = SentenceEncoder.from_pretrained(str(out))
    assert again.config == enc.config and again.dim == 48
    np.testing.assert_allclose(again.encode(["money market news", "watu"]), before, atol=1e-6)


def test_output_layer_returns_that_layers_tokens(tiny_bert_dir):
    enc = SentenceEncoder.from_pretrained(str(tiny_bert_dir))
    feats = enc.tokenize(["the cat", "a dog sat on the mat"])
    with torch.no_grad():
        last = enc(feats)
        first = enc(feats, output_layer=1)
    assert first["token_embeddings"].shape == last["token_embeddings"].shape
    assert not torch.allclose(first["token_embeddings"], last["token_embeddings"])
    torch.testing.assert_close(first["sentence_embedding"], last["sentence_embedding"])
    assert last["special_tokens_mask"][0, 0] == 1  # [CLS]


def test_pyserini_adapters_shapes_and_agreement(tiny_bert_dir):
    q = QueryEncoder(str(tiny_bert_dir))
    d = DocumentEncoder(q.model)
    one = q.encode("paka na mbwa")
    assert one.shape == (32,) and one.dtype == np.float32
    batch = q.encode_batch(["paka na mbwa", "soko"])
    np.testing.assert_allclose(batch[0], one, atol=1e-5)
    docs = d.encode(["cat and dog"], titles=["animals"])
    np.testing.assert_allclose(docs[0], q.model.encode(["animals cat and dog"], role="passage")[0], atol=1e-6)
