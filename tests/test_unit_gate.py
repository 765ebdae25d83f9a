"""The per-unit gate (`gate=unit`): each unit's 1-D logistic fit is sklearn's, the gate is the token gate times
min(1, u_j / m_j) by hand (m_j the factor's toxic-row mean), a per-head hook is gated head-major unit by unit, and a
learned file steers a model exactly as that formula written out by hand, after a save and a load."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from toy_concept import toy_concept

from aura_tl.data import ConceptData
from aura_tl.gating import (
    TOKEN_POSITIONS,
    fit_logistic,
    fit_logistic_per_unit,
    gated_hook,
    get_gate,
    token_rows,
)
from aura_tl.intervention import Intervention
from aura_tl.learn import learn_intervention

TOKENS = torch.tensor([[5, 17, 300, 4000, 12], [7, 8, 9, 10, 11]])


def concept(n: int = 10) -> ConceptData:
    return toy_concept(n)


def test_per_unit_fits_are_sklearns():
    torch.manual_seed(0)
    y = (torch.rand(600) < 0.3).float()  # unbalanced: the classes are weighted equally
    x = torch.randn(600, 3) * torch.tensor([2.0, 0.5, 1.0]) + torch.tensor([1.0, -3.0, 0.0])
    x[:, 0] += 1.5 * y  # a unit that tells the classes apart, one that barely does, one that does not
    x[:, 1] -= 0.2 * y
    l2 = 1e-2
    slope, bias = fit_logistic_per_unit(x, y, l2)
    for j in range(3):
        z = x[:, j].double()
        center, scale = z.mean(), z.std()
        # as for the token gate: C = 1 / (l2 n) on the standardised unit, balanced class weights
        reference = LogisticRegression(C=1 / (l2 * len(y)), class_weight="balanced", tol=1e-12, max_iter=10_000)
        reference.fit(((z - center) / scale).numpy()[:, None], y.numpy())
        s_ref = reference.coef_[0, 0] / float(scale)
        assert float(slope[j]) == pytest.approx(s_ref, rel=1e-4, abs=1e-6)
        assert float(bias[j]) == pytest.approx(reference.intercept_[0] - s_ref * float(center), abs=1e-4)
    assert slope[0] > 3 * abs(float(slope[2]))  # the separating unit has the steep slope
    with pytest.raises(ValueError, match="toxic and non-toxic"):
        fit_logistic_per_unit(x, torch.ones(600), l2)


def test_unit_gate_by_hand():
    rule = get_gate("unit")
    torch.manual_seed(1)
    labels = torch.tensor([1] * 12 + [0] * 12)
    pooled = torch.randn(24 * TOKEN_POSITIONS, 4)
    pooled.view(24, TOKEN_POSITIONS, 4)[:12, TOKEN_POSITIONS // 2:, 0] += 3.0  # unit 0 rises in toxic later tokens
    options = rule.options(gate_unit_l2=0.05)
    fitted = rule.fit(pooled, labels, options)
    x, y = token_rows(pooled, labels)
    w, b = fit_logistic(x, y, options.gate_token_l2)
    slope, bias = fit_logistic_per_unit(x, y, 0.05)
    torch.testing.assert_close(fitted["gate_w"], w)
    torch.testing.assert_close(fitted["gate_unit_slope"], slope)
    norm = torch.sigmoid(x[y == 1] * slope + bias).mean(0)
    torch.testing.assert_close(fitted["gate_unit_norm"], norm)
    a = torch.randn(2, 5, 4)
    expected = torch.sigmoid(a @ w + b)[..., None] * (torch.sigmoid(a * slope + bias) / norm).clamp(max=1)
    torch.testing.assert_close(rule.value(a, fitted), expected)
    # where the units that tell nothing keep the token gate, unit 0 closes it on non-toxic-looking values
    factor = (torch.sigmoid(x * slope + bias) / norm).clamp(max=1)
    assert float(factor[y == 0, 0].mean()) < 0.3 and float(factor[:, 1:].mean()) > 0.8
    assert rule.accuracy(pooled, labels, fitted) > 0.9  # the token factor's balanced accuracy


def test_per_unit_gate_on_heads_is_head_major():
    a = torch.arange(12, dtype=torch.float32).view(1, 1, 2, 6) / 10  # batch, pos, head, d_head
    per_unit = torch.linspace(0.1, 0.9, 12)
    out = gated_hook(a, None, lambda x, hook: x + 1, lambda x: x * 0 + per_unit)
    assert torch.allclose(out, a + per_unit.view(1, 1, 2, 6))


def by_hand(model, iv: Intervention, names: list[str]) -> torch.Tensor:
    """Logits with a + g(a) (f(a) - a) at every hook: f Linear-AcT at the file's lambda, g the unit gate's formula."""
    def hook(activation, hook, name):
        t, lam = iv.tensors[name], iv.strength
        flat = activation.flatten(-2) if activation.ndim == 4 else activation
        inside = (flat >= t["lo"]) & (flat <= t["hi"])
        edited = torch.where(inside, (1 - lam) * flat + lam * (t["omega"] * flat + t["beta"]), flat)
        token = torch.sigmoid(flat @ t["gate_w"] + t["gate_b"])[..., None]
        unit = (torch.sigmoid(flat * t["gate_unit_slope"] + t["gate_unit_bias"]) / t["gate_unit_norm"]).clamp(max=1)
        return (flat + token * unit * (edited - flat)).view(activation.shape)

    return model.run_with_hooks(TOKENS, fwd_hooks=[(h, partial(hook, name=h)) for h in names])


@pytest.mark.parametrize("hooks", ["hook_attn_out", "hook_z"])
def test_unit_gate_runs_end_to_end(tiny, tmp_path, hooks):
    iv = learn_intervention(tiny, concept(), "linact", hooks=hooks, max_ppl_increase="none", gate="unit",
                            gate_neutral="none", gate_unit_l2="0.1", strength=2, progress=False)
    assert iv.gate_rule is get_gate("unit") and iv.metadata["gate"]["options"]["gate_unit_l2"] == 0.1
    loaded = Intervention.load(iv.save(tmp_path / "unit.safetensors"))
    assert loaded.gate_rule is get_gate("unit") and loaded.strength == 2
    with torch.inference_mode():
        plain = tiny(TOKENS)
        with loaded.applied(tiny):
            steered = tiny(TOKENS)
        expected = by_hand(tiny, loaded, loaded.hook_names)
    torch.testing.assert_close(steered, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(steered, plain, atol=1e-4)  # open somewhere: the check can fail
    norms = np.concatenate([loaded.tensors[h]["gate_unit_norm"].numpy() for h in loaded.hook_names])
    assert ((norms > 0) & (norms <= 1)).all()
