"""Mean-AcT: the fit by hand, and learning + steering through the registry (nothing else knows its name)."""

import pytest
import torch

from aura_tl.learn import learn_intervention
from aura_tl.data import ConceptData

TOKENS = torch.tensor([[5, 17, 300, 4000, 12], [7, 8, 9, 10, 11]])


def concept(n: int = 12) -> ConceptData:
    return ConceptData([f"you stupid idiot {i}, shut up" for i in range(n)] + [f"thank you kindly {i}" for i in range(n)],
                       [1] * n + [0] * n, "test", "text_label")


def test_mean_act_is_a_mean_shift_on_the_same_support():
    from aura_tl.methods.meanact import fit_mean_transport

    source = torch.tensor([[1.0, -2.0], [3.0, 0.0]])
    target = torch.tensor([[10.0, 1.0], [20.0, 5.0], [30.0, 3.0]])
    fit = fit_mean_transport(source, target)
    assert fit["omega"].tolist() == [1.0, 1.0]
    assert fit["beta"].tolist() == pytest.approx([20.0 - 2.0, 3.0 - (-1.0)])  # mean target - mean source, by hand
    assert fit["lo"].tolist() == [1.0, -2.0] and fit["hi"].tolist() == [3.0, 0.0]


def test_mean_act_learns_and_steers_through_the_registry(tiny):
    iv = learn_intervention(tiny, concept(), "meanact", hooks="hook_attn_out", progress=False)
    assert iv.method == "meanact" and all(torch.all(t["omega"] == 1) for t in iv.tensors.values())
    with iv.applied(tiny):
        steered = tiny(TOKENS)
    assert not torch.allclose(steered, tiny(TOKENS))
