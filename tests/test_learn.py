import pytest
import torch

from aura_tl.intervention import Intervention
from aura_tl.methods import get_method
from aura_tl.methods._scaling import effective_alphas, topk_alphas
from aura_tl.methods.aura import aura_alphas
from aura_tl.models import ModelShape

SHAPE = ModelShape("toy", 2, 4, 3, 1, 4)


def test_aura_alpha_is_one_minus_gini_for_experts_only():
    auroc = torch.tensor([0.2, 0.5, 0.5001, 0.75, 1.0], dtype=torch.float64)
    # by hand: 1 - 2 (AUROC - 0.5) when AUROC > 0.5, else 1
    assert aura_alphas(auroc).tolist() == pytest.approx([1.0, 1.0, 0.9998, 0.5, 0.0])


def test_topk_is_global_across_hooks():
    aurocs = {"a": torch.tensor([0.9, 0.1, 0.6]), "b": torch.tensor([0.95, 0.7, 0.2])}
    det0 = topk_alphas(aurocs, k=3, value=0.0)  # the three best: b0 0.95, a0 0.9, b1 0.7
    assert det0["a"].tolist() == [0.0, 1.0, 1.0]
    assert det0["b"].tolist() == [0.0, 0.0, 1.0]
    damp = get_method("damp").alphas(aurocs, get_method("damp").options(num_experts=1, damp_alpha=0.25))
    assert damp["a"].tolist() == [1.0, 1.0, 1.0] and damp["b"].tolist() == [0.25, 1.0, 1.0]


def test_strength_interpolates_alpha():
    iv = Intervention("aura", {"blocks.0.mlp.hook_post": {"alpha": torch.tensor([0.2, 1.0, 0.5])}}, SHAPE)
    half = effective_alphas(iv.with_strength(0.5))["blocks.0.mlp.hook_post"]
    # alpha' = 1 - lambda (1 - alpha)
    assert half.tolist() == pytest.approx([0.6, 1.0, 0.75])
    assert effective_alphas(iv.with_strength(0.0))["blocks.0.mlp.hook_post"].tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("k", [0, 7])
def test_num_experts_out_of_range(k):
    with pytest.raises(ValueError, match="num_experts"):
        topk_alphas({"a": torch.rand(3), "b": torch.rand(3)}, k=k, value=0.0)


def test_bad_strength_and_damp_alpha():
    with pytest.raises(ValueError, match=r"strength \(lambda\) of aura must be in \[0, 1\]"):
        Intervention("aura", {"x": {"alpha": torch.ones(2)}}, SHAPE, strength=1.5)
    with pytest.raises(ValueError, match=r"of aura must be in \[0, 1\]"):
        get_method("aura").options(strength=1.5)
    with pytest.raises(ValueError, match="damp_alpha"):
        get_method("damp").options(num_experts=1, damp_alpha=2.0)
