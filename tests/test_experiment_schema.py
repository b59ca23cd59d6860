"""Strict config loading and step caching."""

from dataclasses import dataclass, field
from typing import Literal

import pytest

from clir_eval.experiment.cache import StepCache, stable_hash
from clir_eval.experiment.schema import ConfigError, from_mapping, to_mapping


@dataclass(frozen=True)
class Inner:
    method: Literal["kd", "ot"]
    epsilon: float = 0.05


@dataclass(frozen=True)
class Outer:
    name: str
    items: tuple[Inner, ...] = ()
    hits: int = 100
    tags: dict[str, str] = field(default_factory=dict)
    budget: int | None = None

    def __post_init__(self):
        if self.hits < 1:
            raise ValueError("hits must be >= 1")


def test_valid_mapping_builds_nested_frozen_dataclasses():
    cfg = from_mapping(Outer, {"name": "x", "items": [{"method": "ot", "epsilon": 1}], "budget": None})
    assert cfg.items == (Inner("ot", 1.0),) and isinstance(cfg.items[0].epsilon, float)
    assert to_mapping(cfg)["items"] == [{"method": "ot", "epsilon": 1.0}]


@pytest.mark.parametrize(
    "data, message",
    [
        ({"name": "x", "hitz": 3}, r"config: unknown key\(s\) \['hitz'\]"),
        ({"name": "x", "items": [{"method": "kd"}, {"method": "mse"}]}, r"config.items\[1\].method: must be one of"),
        ({"name": "x", "hits": "many"}, r"config.hits: expected int"),
        ({"name": "x", "hits": True}, r"config.hits: expected int"),
        ({"hits": 3}, r"missing required key 'name'"),
        ({"name": "x", "hits": 0}, r"config: hits must be >= 1"),
        ({"name": "x", "items": "kd"}, r"config.items: expected a list"),
    ],
)
def test_bad_values_name_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        from_mapping(Outer, data)


def test_step_cache_runs_once_and_rebuilds_when_inputs_change(tmp_path):
    calls = []

    def build(out):
        calls.append(out)
        (out / "result.txt").write_text("done")

    cache = StepCache(tmp_path)
    first = cache.run("index", "teacher", {"model": "a"}, build)
    again = cache.run("index", "teacher", {"model": "a"}, build)
    other = cache.run("index", "teacher", {"model": "b"}, build)
    assert first == again != other and len(calls) == 2
    assert [r.cached for r in cache.records] == [False, True, False]
    assert (first / "result.txt").read_text() == "done"
    assert stable_hash({"a": 1, "b": 2}) == stable_hash({"b": 2, "a": 1})


def test_interrupted_step_leaves_nothing_that_looks_complete(tmp_path):
    cache = StepCache(tmp_path)

    def crash(out):
        (out / "partial").write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cache.run("students", "kd", {"n": 1}, crash)
    assert not cache.path_for("students", "kd", {"n": 1}).exists()
    assert list((tmp_path / "students").iterdir()) == []
