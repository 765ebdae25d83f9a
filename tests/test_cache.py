"""The learned-intervention cache: a second learn with the same inputs reads the file (no learning), anything that
changes what is learned misses, and a damaged or foreign file is relearned, never trusted."""

import logging

import pytest
from conftest import PROBE_GATED
import torch

from aura_tl import cache as C
from aura_tl.methods import get_method

# uncalibrated (strength is applied, not learned), the probe gate (learned in seconds)
OPTIONS = {"hooks": "hook_attn_out", "max_per_class": 40, **PROBE_GATED}


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AURA_TL_CACHE", str(tmp_path / "cache"))


def learn(tiny, method="linact", **values):
    return C.learn_cached(tiny, method, get_method(method).options(**{**OPTIONS, **values}), progress=False)


def no_learning(monkeypatch):
    monkeypatch.setattr(C, "learn_intervention", lambda *a, **k: pytest.fail("learned instead of reading the cache"))


def test_second_learn_reads_the_cache(tiny, monkeypatch):
    first = learn(tiny)
    assert not first.hit and first.path.is_file() and first.path.parent == C.intervention_cache_dir()
    no_learning(monkeypatch)
    second = learn(tiny)
    assert second.hit and second.path == first.path
    for hook, named in first.intervention.tensors.items():
        for name, tensor in named.items():
            assert torch.equal(second.intervention.tensors[hook][name], tensor)
    assert second.describe()["cache_hit"] and second.describe()["data"] == "rtp-learn"


def test_strength_is_applied_to_the_cached_file(tiny, monkeypatch):
    learn(tiny)
    no_learning(monkeypatch)
    assert learn(tiny, strength=0.25).intervention.strength == 0.25


def test_steer_prompt_is_applied_to_the_cached_file(tiny, monkeypatch):
    """steer_prompt is applied, not learned: a second learn that asks for it reads the same entry."""
    first = learn(tiny, steer_prompt=True)  # Linear-AcT's default is false
    assert first.intervention.steer_prompt
    no_learning(monkeypatch)
    again = learn(tiny)
    assert again.hit and again.path == first.path and not again.intervention.steer_prompt
    assert learn(tiny, steer_prompt="true").intervention.steer_prompt


@pytest.mark.parametrize("change", [{"hooks": "hook_mlp_out"}, {"max_per_class": 41}, {"seed": 1},
                                    {"data": "embedded"}, {"pooling": "max"}])
def test_a_changed_option_misses(tiny, change):
    first = learn(tiny)
    other = learn(tiny, **change)
    assert not other.hit and other.path != first.path


def test_another_method_version_or_model_misses(tiny, monkeypatch):
    first = learn(tiny)
    assert learn(tiny, "meanact").path != first.path
    monkeypatch.setattr(C, "__version__", "99.0.0")
    assert not learn(tiny).hit


def test_model_fingerprint_sees_one_changed_weight(tiny):
    before = C.model_fingerprint(tiny)
    assert C.model_fingerprint(tiny) == before
    weight = tiny.blocks[1].attn.W_O
    with torch.no_grad():
        weight[0, 0, 0] += 1.0
    try:
        assert C.model_fingerprint(tiny) != before
    finally:
        with torch.no_grad():
            weight[0, 0, 0] -= 1.0


@pytest.mark.parametrize("damage", ["truncate", "garbage", "foreign key"])
def test_a_damaged_cache_file_is_relearned(tiny, caplog, damage):
    path = learn(tiny).path
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:100])
    elif damage == "garbage":
        path.write_bytes(b"\x00not safetensors" * 10)
    else:  # a readable intervention whose key is not this one (e.g. copied over by hand)
        other = learn(tiny, seed=5).path
        path.write_bytes(other.read_bytes())
    with caplog.at_level(logging.WARNING, logger="aura_tl.cache"):
        again = learn(tiny)
    assert not again.hit and "relearning" in caplog.text
    assert learn(tiny).hit  # rewritten whole


def test_cache_off_writes_nothing(tiny):
    result = C.learn_cached(tiny, "linact", get_method("linact").options(**OPTIONS), use_cache=False, progress=False)
    assert result.path is None and not C.intervention_cache_dir().exists()
