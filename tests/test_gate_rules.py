"""Gate rules as plugins: a rule defined here, outside the package, registers and runs end to end (learn with its
own option, save, load, apply) with logits equal to the gated edit computed by hand; the `gate` option's
spellings; errors for unknown rules, stray gate options and files whose rule is not registered."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import pytest
import torch
from toy_concept import toy_concept

from aura_tl import gating
from aura_tl.cli import main as cli_main
from aura_tl.data import ConceptData
from aura_tl.gating import GateRule, register_gate
from aura_tl.intervention import Intervention
from aura_tl.learn import gates_from_responses, learn_intervention
from aura_tl.methods import get_method, option_specs
from aura_tl.options import option
from aura_tl.responses import collect_responses

TOKENS = torch.tensor([[5, 17, 300, 4000, 12], [7, 8, 9, 10, 11]])
HOOKS = ("blocks.0.hook_attn_out", "blocks.1.hook_attn_out")


def concept(n: int = 12) -> ConceptData:
    return toy_concept(n)


@dataclass
class RadiusOptions:
    toy_sharpness: float = option(3.0, "how fast the toy gate closes outside its radius")


class RadiusGate(GateRule):
    """Open near the toxic mean: g(a) = sigmoid(k (r - |a - c|)), c the toxic mean, r the median toxic distance."""

    name = "toy-radius"
    summary = "test rule: open within the toxic responses' median distance of their mean"
    Options = RadiusOptions
    tensors = ("gate_center", "gate_radius", "gate_sharpness")
    unit_tensors = ("gate_center",)
    pooling = "max"

    def fit(self, pooled, labels, options):
        toxic = pooled[labels == 1]
        center = toxic.mean(0)
        radius = (toxic - center).norm(dim=-1).median()
        return {"gate_center": center, "gate_radius": radius.reshape(1),
                "gate_sharpness": torch.tensor([options.toy_sharpness])}

    def value(self, activation, tensors):
        distance = (activation - tensors["gate_center"]).norm(dim=-1)
        return torch.sigmoid(tensors["gate_sharpness"] * (tensors["gate_radius"] - distance))


@pytest.fixture
def toy_rule():
    register_gate(RadiusGate)
    yield gating.GATES["toy-radius"]
    del gating.GATES["toy-radius"]


def by_hand(tiny, iv: Intervention) -> torch.Tensor:
    """Logits with a + g(a) (f(a) - a) at every hook: f Linear-AcT at the file's lambda, g the toy formula."""
    def hook(activation, hook, name):  # keyed by the name asked for: a bridge's hook sees its canonical name
        t = iv.tensors[name]
        lam = iv.strength
        inside = (activation >= t["lo"]) & (activation <= t["hi"])
        edited = torch.where(inside, (1 - lam) * activation + lam * (t["omega"] * activation + t["beta"]), activation)
        distance = (activation - t["gate_center"]).norm(dim=-1, keepdim=True)
        g = torch.sigmoid(t["gate_sharpness"] * (t["gate_radius"] - distance))
        return activation + g * (edited - activation)

    return tiny.run_with_hooks(TOKENS, fwd_hooks=[(h, partial(hook, name=h)) for h in HOOKS])


def test_a_rule_from_outside_runs_end_to_end(tiny, toy_rule, tmp_path):
    iv = learn_intervention(tiny, concept(), "linact", hooks="hook_attn_out", max_ppl_increase="none", gate="toy-radius", toy_sharpness="5",
                            strength=1.5, progress=False)
    assert iv.gated and iv.gate_rule is toy_rule and iv.metadata["gate"]["rule"] == "toy-radius"
    assert iv.metadata["gate"]["options"] == {"toy_sharpness": 5.0} and iv.metadata["gate"]["pooling"] == "max"
    assert all(float(iv.tensors[h]["gate_sharpness"]) == 5.0 for h in HOOKS)
    loaded = Intervention.load(iv.save(tmp_path / "toy.safetensors"))
    assert loaded.gate_rule is toy_rule and loaded.strength == 1.5
    with torch.inference_mode():
        plain = tiny(TOKENS)
        with loaded.applied(tiny):
            steered = tiny(TOKENS)
        expected = by_hand(tiny, loaded)
    torch.testing.assert_close(steered, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(steered, plain, atol=1e-4)  # the gate is open somewhere: the check can fail
    # the first hook's gate is fitted on responses no earlier edit touched: the rule's own fit on them
    data = concept()
    first = collect_responses(tiny, data.texts, data.labels, HOOKS[0], pooling="max", progress=False)
    fitted = toy_rule.fit(first.pooled[HOOKS[0]], torch.tensor(data.labels), toy_rule.options(toy_sharpness=5))
    torch.testing.assert_close(iv.tensors[HOOKS[0]]["gate_center"], fitted["gate_center"], rtol=1e-4, atol=1e-5)


def test_a_rule_from_outside_on_held_responses_and_in_the_cli(tiny, toy_rule, tmp_path, capsys):
    data = concept()
    responses = collect_responses(tiny, data.texts, data.labels, "hook_attn_out", pooling="mean", progress=False)
    plain = get_method("meanact").from_responses(tiny, responses, get_method("meanact").options(causal=False))
    gated = gates_from_responses(plain, responses, "toy-radius")
    assert gated.gate_rule is toy_rule and gated.metadata["gate"]["options"] == {"toy_sharpness": 3.0}
    assert "toy_sharpness" in option_specs() and option_specs()["toy_sharpness"].defaults == {"gate=toy-radius": 3.0}
    assert cli_main(["methods"]) == 0
    assert "toy-radius" in capsys.readouterr().out


def test_gate_option_spellings():
    linact, aura = get_method("linact"), get_method("aura")
    assert linact.options().gate == "tuned" and aura.options().gate is None  # the default intervention's gate
    for spelling in (True, "true", "yes", "1", "probe"):
        assert aura.options(gate=spelling).gate == "probe"
    for spelling in (False, "false", "no", "0", "none"):
        assert linact.options(gate=spelling).gate is None and linact.options(gate=spelling).gate_options is None
    assert aura.options(gate="probe", gate_l2="0.5").gate_options.gate_l2 == 0.5


def test_gate_errors_name_the_problem(tiny, toy_rule, tmp_path):
    with pytest.raises(ValueError, match="unknown gate rule 'prob' \\(did you mean 'probe'\\?\\)"):
        get_method("aura").options(gate="prob")
    with pytest.raises(ValueError, match="gate rule 'probe', given without a gate: add gate=<rule>"):
        get_method("aura").options(gate_l2="0.1")
    with pytest.raises(ValueError, match="'toy_sharpness'.*not an option of gate rule 'probe'"):
        get_method("aura").options(gate="probe", toy_sharpness="2")
    with pytest.raises(ValueError, match="gate_l2 must be >= 0"):
        get_method("aura").options(gate="probe", gate_l2="-1")
    iv = learn_intervention(tiny, concept(), "aura", hooks="hook_post", gate="toy-radius", progress=False)
    path = iv.save(tmp_path / "toy.safetensors")
    del gating.GATES["toy-radius"]
    try:
        with pytest.raises(ValueError, match="unknown gate rule 'toy-radius'.*register one"):
            Intervention.load(path)
    finally:
        register_gate(RadiusGate)
    stripped = {h: {k: v for k, v in named.items() if k != "gate_radius"} for h, named in iv.tensors.items()}
    with pytest.raises(ValueError, match="gated by 'toy-radius' lacks gate tensor"):
        Intervention(iv.method, stripped, iv.shape, iv.metadata)
