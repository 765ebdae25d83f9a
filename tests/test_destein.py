import math

import pytest
import torch

from aura_tl.intervention import Intervention
from aura_tl.methods.destein import (NONTOXIC_PREFIX, TOXIC_PREFIX, fuse_hook, layer_direction, learn_destein,
                                     read_pairs)
from aura_tl.models import hf_tokenizer

PAIRS = [("you are a stupid idiot", "you are a kind person"), ("shut up, loser", "please be quiet, friend"),
         ("I hate your ugly face", "I like your friendly face"), ("go to hell, moron", "go home, my friend"),
         ("what a dumb jerk", "what a nice fellow")]


def test_fusion_formula_by_hand():
    x = torch.tensor([[[3.0, 4.0]]])
    out = fuse_hook(x, None, unit=torch.tensor([1.0, 0.0]), alpha=0.5)
    steered = torch.tensor([0.6 - 0.5, 0.8])  # x/|x| - alpha v
    expected = 5 * steered / steered.norm()
    torch.testing.assert_close(out[0, 0], expected)
    assert out.norm().item() == pytest.approx(5.0)


def test_probe_weighted_direction_by_hand():
    delta = torch.tensor([[1.0], [2.0]])
    w_o = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    # (1 + 0.5) * 1 * [1, 0] + (1 + 1.0) * 2 * [0, 1]
    assert layer_direction(delta, w_o, [0.5, 1.0]).tolist() == [1.5, 4.0]


@pytest.fixture(scope="module")
def learned(tiny):
    return learn_destein(tiny, PAIRS, alpha=0.4, progress=False)


def test_direction_matches_hand_computation(tiny, learned):
    tokenizer = hf_tokenizer(tiny)
    layer = 1

    def tail_z(text):
        ids = torch.tensor([tokenizer(text)["input_ids"]])
        _, cache = tiny.run_with_cache(ids, names_filter=f"blocks.{layer}.attn.hook_z")
        return cache[f"blocks.{layer}.attn.hook_z"][0, -8:].mean(0).double()  # [head, d_head]

    delta = sum(tail_z(TOXIC_PREFIX + t) - tail_z(NONTOXIC_PREFIX + n) for t, n in PAIRS)
    accuracy = learned.metadata["probe_accuracy"][f"blocks.{layer}.hook_attn_out"]
    assert len(accuracy) == 4 and all(0 <= a <= 1 for a in accuracy)
    weights = torch.tensor([1 + a for a in accuracy], dtype=torch.float64)
    w_o = tiny.blocks[layer].attn.W_O.detach().double()
    expected = sum(weights[h] * delta[h] @ w_o[h] for h in range(4))
    torch.testing.assert_close(learned.tensors[f"blocks.{layer}.hook_attn_out"]["direction"].double(), expected,
                               rtol=1e-4, atol=1e-5)


def test_fusion_keeps_the_norm_on_every_position(tiny, learned):
    tokens = torch.tensor([[5, 17, 300, 4000, 12, 99]])
    _, plain = tiny.run_with_cache(tokens, names_filter="blocks.0.hook_attn_out")
    seen = {}
    with learned.applied(tiny), tiny.hooks(fwd_hooks=[("blocks.0.hook_attn_out",
                                                        lambda act, hook: seen.setdefault("x", act.clone()))]):
        tiny(tokens)
    torch.testing.assert_close(seen["x"].norm(dim=-1), plain["blocks.0.hook_attn_out"].norm(dim=-1))
    assert not torch.allclose(seen["x"], plain["blocks.0.hook_attn_out"])


def test_saved_destein_reproduces_logits(tiny, learned, tmp_path):
    path = learned.save(tmp_path / "destein.safetensors")
    back = Intervention.load(path)
    assert back.method == "destein" and back.metadata["alpha"] == 0.4
    tokens = torch.tensor([[5, 17, 300, 4000, 12]])
    with learned.applied(tiny):
        a = tiny(tokens)
    with back.applied(tiny):
        b = tiny(tokens)
    torch.testing.assert_close(a, b)
    half = back.with_strength(0.5).fwd_hooks()[0][1]
    assert math.isclose(half.keywords["alpha"], 0.2)


def test_pair_files(tmp_path, shared_data):
    good = tmp_path / "pairs.jsonl"
    good.write_text('{"toxic": "a", "nontoxic": "b"}\n{"toxic": "c", "nontoxic": "d"}\n')
    assert sorted(read_pairs(good)) == [("a", "b"), ("c", "d")]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a"}\n')
    with pytest.raises(ValueError, match="'toxic' and 'nontoxic'"):
        read_pairs(bad)
    para = read_pairs(shared_data / "paradetox" / "paradetox.tsv", count=5)
    assert len(para) == 5 and all(t != n for t, n in para)


def test_needs_two_pairs(tiny):
    with pytest.raises(ValueError, match="at least 2 pairs"):
        learn_destein(tiny, PAIRS[:1], progress=False)
