"""Encoders held for a study's runs: loaded once, and sharing their common layers from the first use on."""

from __future__ import annotations

import gc

import pytest

from clir_eval.models import held, trunk
from clir_eval.models.sentence import SentenceEncoder
from tiny_models import make_tiny_bert

TEXTS = ["the cat sat on the mat", "paka", "mbwa na paka kwa nyumba ya leo", "the river bank", "habari",
         "money fell today in the stock market of the country", "rais wa nchi na serikali"]


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    """A backbone and a student of it that adds only a projection (like ``student-init``), both saved."""
    root = tmp_path_factory.mktemp("held")
    base = make_tiny_bert(root / "base", hidden_size=32, num_layers=4, seed=5)
    projected = SentenceEncoder.from_pretrained(str(base))
    projected.add_projection(24, seed=1)
    projected.save(root / "projected")
    return str(base), str(root / "projected")


@pytest.fixture(autouse=True)
def fresh_trunk():
    gc.collect()
    trunk.trunk_cache().resize(trunk.DEFAULT_CACHE_MIB * 2**20)
    trunk.forget()
    yield
    trunk.forget()


def _one_at_a_time(models):
    """As a run does without holding: load, encode, drop."""
    out = {}
    for model in models:
        encoder = held.load_encoder(model)
        out[model] = encoder.encode(TEXTS, batch_size=3)
        del encoder
        gc.collect()
    return out


def test_held_encoders_share_from_the_first_use_on_and_encode_the_same(family):
    batches = -(-len(TEXTS) // 3)
    alone = _one_at_a_time(family)
    assert trunk.trunk_cache().stats.hits[4] == 0  # the base ran first knowing no partner: nothing stored

    trunk.forget()
    with held.holding(family) as names:
        assert names == list(family)
        assert held.load_encoder(family[0]) is held.load_encoder(family[0])  # loaded once
        together = {model: held.load_encoder(model).encode(TEXTS, batch_size=3) for model in family}
    # the projected student resumed from the base's whole backbone, and got the same bytes as alone
    assert trunk.trunk_cache().stats.hits[4] == batches
    for model in family:
        assert together[model].tobytes() == alone[model].tobytes()
    assert held.load_encoder(family[0]) is not held.load_encoder(family[0])  # released after the block


def test_holding_stops_at_the_byte_bound(family):
    one = held.weight_bytes(SentenceEncoder.from_pretrained(family[0]))
    with held.holding(family, max_bytes=one) as names:
        assert names == [family[0]]
        assert held.load_encoder(family[1]) is not held.load_encoder(family[1])
    with held.holding(family, max_bytes=0) as names:
        assert names == []


def test_the_bound_from_the_environment_is_checked(monkeypatch):
    monkeypatch.setenv(held.HELD_ENV, "12")
    assert held.held_bytes_bound() == 12 * 2**20
    monkeypatch.setenv(held.HELD_ENV, "lots")
    with pytest.raises(ValueError, match=held.HELD_ENV):
        held.held_bytes_bound()
