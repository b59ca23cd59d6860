"""Shared-trunk encoding: encoders with identical lower layers reuse their states, byte for byte."""

from __future__ import annotations

import gc

import numpy as np
import pytest
import torch

from clir_eval.models import trunk
from clir_eval.models.sentence import SentenceEncoder
from tiny_models import make_tiny_bert

TEXTS = [
    "the cat sat on the mat", "paka", "mbwa na paka kwa nyumba ya leo", "the river bank",
    "money fell today in the stock market of the country", "habari", "water food school health city",
    "rais wa nchi na serikali", "dog", "the president of the government won the election today",
]


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    return make_tiny_bert(tmp_path_factory.mktemp("trunk") / "base", hidden_size=32, num_layers=4, seed=3)


@pytest.fixture(autouse=True)
def fresh_trunk():
    """Each test starts with an empty cache and no remembered encoders, and leaves it so."""
    gc.collect()  # encoders of earlier tests must not be live partners here
    trunk.trunk_cache().resize(trunk.DEFAULT_CACHE_MIB * 2**20)
    trunk.forget()
    yield
    trunk.forget()


def _perturbed(path, layers, seed, projection=False):
    """The base model with the given transformer layers' weights changed (the others stay bit-identical)."""
    model = SentenceEncoder.from_pretrained(str(path))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for index in layers:
            for param in model.backbone.encoder.layer[index].parameters():
                param.add_(0.05 * torch.randn(param.shape, generator=generator))
    if projection:
        model.add_projection(24, seed=seed)
    return model


def _family(path):
    return {
        "base": _perturbed(path, [], 0),
        "upper_a": _perturbed(path, [2, 3], 1),      # embeddings + layers 0-1 frozen
        "upper_b": _perturbed(path, [2, 3], 2),
        "projected": _perturbed(path, [], 3, projection=True),  # the whole backbone shared
        "embeddings_only": _perturbed(path, [0, 1, 2, 3], 4),
    }


def _encode_all(models, batch_size=3):
    return {name: model.encode(TEXTS, batch_size=batch_size) for name, model in models.items()}


def _separately(models, batch_size=3):
    cache = trunk.trunk_cache()
    limit = cache.max_bytes
    cache.resize(0)
    try:
        return _encode_all(models, batch_size)
    finally:
        cache.resize(limit)


def test_chain_depth_shared_is_the_frozen_prefix(base_dir):
    models = _family(base_dir)
    chains = {name: trunk.trunk_chain(model) for name, model in models.items()}
    assert len(chains["base"]) == 5  # embeddings + 4 layers
    assert trunk.shared_depth(chains["base"], chains["upper_a"]) == 2
    assert trunk.shared_depth(chains["upper_a"], chains["upper_b"]) == 2
    assert trunk.shared_depth(chains["base"], chains["projected"]) == 4
    assert trunk.shared_depth(chains["base"], chains["embeddings_only"]) == 0
    other = SentenceEncoder.from_pretrained(str(make_tiny_bert(base_dir.parent / "other", num_layers=4, seed=9)))
    assert trunk.shared_depth(chains["base"], trunk.trunk_chain(other)) == -1


def test_shared_encoding_is_byte_identical_and_reuses_the_trunk(base_dir):
    models = _family(base_dir)
    expected = _separately(models)
    assert trunk.trunk_cache().stats.stored == 0
    shared = _encode_all(models)
    for name in models:
        assert shared[name].tobytes() == expected[name].tobytes(), name
    stats = trunk.trunk_cache().stats
    batches = -(-len(TEXTS) // 3)
    # base runs everything and stores depths 2 and 4; upper_a/upper_b resume at 2, projected at 4;
    # embeddings_only shares only depth 0, which is never stored, so it runs from its embeddings.
    assert stats.hits[2] == 2 * batches and stats.hits[4] == batches
    assert stats.misses == 2 * batches
    assert not any(np.array_equal(shared["base"], shared[n]) for n in ("upper_a", "upper_b", "embeddings_only"))


def test_models_loaded_one_at_a_time_share_from_the_second_on(base_dir):
    """As the study runner does: each system loads its encoder, encodes, and drops it."""
    reference = _separately(_family(base_dir))
    order = [("base", [], 0, False), ("upper_a", [2, 3], 1, False), ("upper_b", [2, 3], 2, False),
             ("projected", [], 3, True)]
    for round_ in range(2):
        for name, layers, seed, projection in order:
            model = _perturbed(base_dir, layers, seed, projection)
            assert model.encode(TEXTS, batch_size=3).tobytes() == reference[name].tobytes(), (round_, name)
            del model
            gc.collect()
    stats = trunk.trunk_cache().stats
    batches = -(-len(TEXTS) // 3)
    # Round 1: base knows no partner and stores nothing; upper_a learns it shares depth 2 with base
    # (remembered) and stores it; upper_b and projected resume at 2, projected stores depth 4 (base's whole
    # backbone). Round 2: base finds its whole output stored; the others resume as before.
    assert stats.hits[2] == (2 + 2) * batches and stats.hits[4] == (0 + 2) * batches
    assert stats.misses == 2 * batches


def test_weights_changed_in_place_are_not_reused(base_dir):
    models = {"base": _perturbed(base_dir, [], 0), "copy": _perturbed(base_dir, [], 0, projection=True)}
    _encode_all(models)
    with torch.no_grad():
        models["copy"].backbone.encoder.layer[3].output.dense.weight.mul_(1.5)  # as an optimizer step would
    after = models["copy"].encode(TEXTS, batch_size=3)
    assert after.tobytes() == _separately({"copy": models["copy"]})["copy"].tobytes()


def test_padding_free_and_padded_batches_and_one_text(base_dir):
    models = _family(base_dir)
    texts = ["paka mbwa", "mbwa paka", "the cat", "a dog"]  # one length: the batch has no padding
    for batch_size in (1, 2, 4):
        expected = {n: m.encode(texts, batch_size=batch_size) for n, m in models.items()}
        trunk.forget()
        limit = trunk.trunk_cache().max_bytes
        trunk.trunk_cache().resize(0)
        separate = {n: m.encode(texts, batch_size=batch_size) for n, m in models.items()}
        trunk.trunk_cache().resize(limit)
        for name in models:
            assert expected[name].tobytes() == separate[name].tobytes(), (batch_size, name)


def test_cache_is_bounded_in_bytes_and_least_recently_used_goes_first():
    cache = trunk.TrunkCache(max_bytes=3 * 400)
    tensors = {k: torch.zeros(100) for k in "abcd"}  # 400 bytes each
    for key in "abc":
        cache.put((key, "b"), tensors[key])
    assert cache.get(("a", "b")) is tensors["a"]  # a is now the most recent
    cache.put(("d", "b"), tensors["d"])
    assert cache.get(("b", "b")) is None and cache.get(("a", "b")) is not None
    assert cache.nbytes == 1200 and cache.stats.evicted == 1
    cache.put(("big", "b"), torch.zeros(1000))  # larger than the whole bound: not kept, nothing evicted
    assert cache.get(("big", "b")) is None and len(cache) == 3
    cache.resize(0)
    assert len(cache) == 0 and not cache.enabled


def test_cache_size_from_environment_is_checked(monkeypatch):
    monkeypatch.setattr(trunk, "_CACHE", None)
    monkeypatch.setenv(trunk.CACHE_ENV, "lots")
    with pytest.raises(ValueError, match=trunk.CACHE_ENV):
        trunk.trunk_cache()
    monkeypatch.setenv(trunk.CACHE_ENV, "1.5")
    assert trunk.trunk_cache().max_bytes == int(1.5 * 2**20)


def test_eager_attention_shares_among_its_own_and_not_with_sdpa(base_dir):
    """The attention implementation builds its own mask (additive vs boolean): it is part of the digest."""
    models = _family(base_dir)
    if not hasattr(models["base"].backbone, "set_attn_implementation"):
        pytest.skip("this transformers cannot switch attention implementations after loading")
    for model in models.values():
        model.backbone.set_attn_implementation("eager")
    sdpa = _perturbed(base_dir, [], 0)
    assert trunk.shared_depth(trunk.trunk_chain(sdpa), trunk.trunk_chain(models["base"])) == -1
    del sdpa
    gc.collect()
    expected = _separately(models)
    shared = _encode_all(models)
    for name in models:
        assert shared[name].tobytes() == expected[name].tobytes(), name
    assert trunk.trunk_cache().stats.hits[2] > 0


def test_a_resumed_call_leaves_later_full_calls_every_hidden_state(base_dir):
    """A model's first call with hidden states wanted may be a resumed one (a student's first training step with its
    frozen trunk shared): its hidden states start at the stored states, and every later full call still returns all
    layers' states, equal to a fresh model's (transformers 5 installs its recording hooks at the first such call:
    installed on the upper layers only, a full call returned 2 of 5 states too few here, and the dev evaluation of an
    OT term on an intermediate layer crashed)."""
    model = SentenceEncoder.from_pretrained(str(base_dir)).backbone.eval()
    fresh = SentenceEncoder.from_pretrained(str(base_dir)).backbone.eval()
    encoder = SentenceEncoder.from_pretrained(str(base_dir))
    inputs = {k: v for k, v in encoder.tokenize(TEXTS[:4], "query").items()
              if k in ("input_ids", "attention_mask", "token_type_ids")}
    with torch.no_grad():
        want = fresh(**inputs, output_hidden_states=True, return_dict=True).hidden_states
        states = trunk.states_at(model, 2, inputs)
        resumed = trunk.resume(model, 2, states, inputs, output_hidden_states=True).hidden_states
        full = model(**inputs, output_hidden_states=True, return_dict=True).hidden_states
    assert len(want) == 5 and len(resumed) == 3 and len(full) == 5
    assert torch.equal(resumed[0], states)
    for got, expected in zip(resumed[1:], want[3:]):
        torch.testing.assert_close(got, expected)
    for got, expected in zip(full, want):
        assert torch.equal(got, expected)
