"""Conditional steering (aura_tl.gating): the probe gate's fit against sklearn's logistic regression, the gated
hook against a hand computation, the wiring into a model (a closed gate is unsteered, an open one is the plain
method), causal fitting, files, and the `gate` option through `learn_intervention` for two kinds of method."""

import numpy as np
import pytest
import torch
from toy_concept import toy_concept

from aura_tl.data import ConceptData
from aura_tl.gating import fit_gate, gate_value, gated_hook
from aura_tl.intervention import Intervention
from aura_tl.learn import learn_gates, learn_intervention
from aura_tl.responses import collect_responses

TOKENS = torch.tensor([[5, 17, 300, 4000, 12], [7, 8, 9, 10, 11]])


def concept(n: int = 16) -> ConceptData:
    return toy_concept(n)


def test_fit_matches_sklearn_logistic_regression_on_the_projection():
    from sklearn.linear_model import LogisticRegression

    g = torch.Generator().manual_seed(0)
    toxic = torch.randn(300, 5, generator=g) + torch.tensor([1.0, 0.5, 0.0, 0.0, -0.3])
    polite = torch.randn(260, 5, generator=g)
    pooled, labels = torch.cat([toxic, polite]), torch.tensor([1] * 300 + [0] * 260)
    l2 = 1e-3
    fitted = fit_gate(pooled, labels, l2=l2)
    # reference: the difference-of-means direction, the standardised projection, sklearn's L2 logistic regression
    x, y = pooled.double().numpy(), labels.numpy()
    direction = x[y == 1].mean(0) - x[y == 0].mean(0)
    direction /= np.linalg.norm(direction)
    z = x @ direction
    z = (z - z.mean()) / z.std(ddof=1)
    reference = LogisticRegression(C=1 / (l2 * len(y)), tol=1e-12, max_iter=10_000).fit(z[:, None], y)
    ours = (pooled.double() @ fitted["gate_w"].double() + fitted["gate_b"].double()).numpy()
    theirs = reference.decision_function(z[:, None])
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)
    assert np.allclose(fitted["gate_w"].double().numpy() / np.linalg.norm(fitted["gate_w"].numpy()), direction,
                       atol=1e-5)


def test_fit_refuses_one_class():
    with pytest.raises(ValueError, match="toxic and non-toxic"):
        fit_gate(torch.randn(4, 3), torch.ones(4))


def test_gated_hook_by_hand():
    a = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])  # batch 1, two positions, two units
    w, b = torch.tensor([2.0, 0.0]), torch.tensor([-1.0])

    def double(x, hook):
        return 2 * x

    out = gated_hook(a, None, double, lambda x: gate_value(x, w, b))
    gates = torch.sigmoid(torch.tensor([2.0 * 1 - 1, -1.0]))  # position 0: w.a = 2; position 1: 0
    expected = a + gates[None, :, None] * a  # double(a) - a = a
    assert torch.allclose(out, expected)
    assert torch.allclose(gate_value(a, w, b), gates[None])


def test_gated_hook_reads_heads_head_major():
    a = torch.arange(12, dtype=torch.float32).view(1, 1, 2, 6) / 10  # batch, pos, head, d_head
    w, b = torch.linspace(-1, 1, 12), torch.tensor([0.3])
    out = gated_hook(a, None, lambda x, hook: x + 1, lambda x: gate_value(x, w, b))
    gate = torch.sigmoid(a.flatten() @ w + b)
    assert torch.allclose(out, a + gate)


@pytest.fixture(scope="module")
def learned(tiny):
    return learn_intervention(tiny, concept(), "linact", hooks="hook_attn_out", gate=True, max_ppl_increase="none",
                              strength=2.0, progress=False)


def test_learned_gates_are_stored_and_survive_a_file(learned, tmp_path):
    assert learned.gated and set(learned.metadata["gate"]["accuracy"]) == set(learned.hook_names)
    for named in learned.tensors.values():
        assert named["gate_w"].shape == named["omega"].shape and named["gate_b"].shape == (1,)
    path = learned.save(tmp_path / "gated.safetensors")
    again = Intervention.load(path)
    assert again.gated
    for hook in learned.hook_names:
        assert torch.equal(again.tensors[hook]["gate_w"], learned.tensors[hook]["gate_w"])


def with_gate_bias(intervention: Intervention, bias: float) -> Intervention:
    tensors = {hook: {**named, "gate_b": torch.tensor([bias])} for hook, named in intervention.tensors.items()}
    return Intervention(intervention.method, tensors, intervention.shape, intervention.metadata, intervention.strength)


def test_closed_gate_is_unsteered_and_open_gate_is_the_method(tiny, learned):
    ungated = Intervention(learned.method, {h: {k: v for k, v in named.items() if not k.startswith("gate")}
                                            for h, named in learned.tensors.items()}, learned.shape,
                           strength=learned.strength)
    assert not ungated.gated
    with torch.inference_mode():
        plain = tiny(TOKENS)
        with ungated.applied(tiny):
            steered = tiny(TOKENS)
        with with_gate_bias(learned, -1e4).applied(tiny):
            closed = tiny(TOKENS)
        with with_gate_bias(learned, 1e4).applied(tiny):
            opened = tiny(TOKENS)
        with learned.applied(tiny):
            gated = tiny(TOKENS)
    assert not torch.allclose(plain, steered, atol=1e-4)
    assert torch.allclose(closed, plain, atol=1e-5)
    assert torch.allclose(opened, steered, atol=1e-5)
    assert not torch.allclose(gated, plain, atol=1e-5) and not torch.allclose(gated, steered, atol=1e-5)


def test_gates_are_fitted_causally(tiny, learned):
    """Layer 1's gate equals a gate fitted on responses pooled with layer 0's gated edit attached."""
    data = concept()
    layer0 = Intervention(learned.method, {"blocks.0.hook_attn_out": learned.tensors["blocks.0.hook_attn_out"]},
                          learned.shape, learned.metadata, strength=1.0)  # gates are fitted at lambda 1
    assert learned.strength == 2.0 and learned.metadata["gate"]["fitted_at_strength"] == 1.0
    with layer0.applied(tiny):
        responses = collect_responses(tiny, data.texts, data.labels, "blocks.1.hook_attn_out", pooling="mean",
                                      progress=False)
    expected = fit_gate(responses.pooled["blocks.1.hook_attn_out"], torch.tensor(data.labels))
    got = learned.tensors["blocks.1.hook_attn_out"]
    assert torch.allclose(got["gate_w"], expected["gate_w"], rtol=1e-3, atol=1e-5)
    assert torch.allclose(got["gate_b"], expected["gate_b"], rtol=1e-3, atol=1e-5)
    plain = collect_responses(tiny, data.texts, data.labels, "blocks.1.hook_attn_out", pooling="mean", progress=False)
    non_causal = fit_gate(plain.pooled["blocks.1.hook_attn_out"], torch.tensor(data.labels))
    assert not torch.allclose(got["gate_w"], non_causal["gate_w"], rtol=1e-3, atol=1e-5)  # the check can fail


def test_gate_option_on_a_scaling_method(tiny):
    """AurA's per-neuron scaling gated: the gate wraps any method's hook, fitted at its own hooks."""
    iv = learn_intervention(tiny, concept(), "aura", hooks="hook_post", gate=True, progress=False)
    assert iv.gated and iv.method == "aura"
    ungated = learn_intervention(tiny, concept(), "aura", hooks="hook_post", progress=False)
    assert not ungated.gated
    regated = learn_gates(tiny, ungated, concept(), progress=False)
    for hook in iv.hook_names:
        assert torch.allclose(iv.tensors[hook]["gate_w"], regated.tensors[hook]["gate_w"])


def test_a_gated_file_through_aura_hooked_says_so(tiny, learned, tmp_path):
    from lm_eval_plugin.model import describe_intervention, plan_intervention

    path = learned.save(tmp_path / "gated.safetensors")
    loaded, info = plan_intervention(str(path), None, {})(tiny)
    assert loaded.gated and describe_intervention(info).endswith("gated (conditional steering)")
    plain = Intervention(learned.method, {h: {k: v for k, v in n.items() if not k.startswith("gate")}
                                          for h, n in learned.tensors.items()}, learned.shape)
    _, info = plan_intervention(str(plain.save(tmp_path / "plain.safetensors")), None, {})(tiny)
    assert "conditional steering" not in describe_intervention(info)  # the tmp path itself says "gated"
