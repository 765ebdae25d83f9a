"""Linear-AcT: the fit against a hand computation and numpy.polyfit, the support rule, strength 0, causal vs
non-causal estimation (checked against collecting with the earlier maps attached), and files."""

import numpy as np
import pytest
import torch
from toy_concept import toy_concept

from aura_tl.data import ConceptData
from aura_tl.intervention import Intervention
from aura_tl.learn import learn_intervention
from aura_tl.methods import get_method
from aura_tl.methods._transport import transport_hook
from aura_tl.methods.linact import fit_linear_transport, sorted_pairs
from aura_tl.models import hf_tokenizer
from aura_tl.responses import collect_responses

TOKENS = torch.tensor([[5, 17, 300, 4000, 12], [7, 8, 9, 10, 11]])


def test_fit_by_hand_one_dimension():
    source = torch.tensor([[3.0], [1.0], [2.0]])  # sorted: 1, 2, 3
    target = torch.tensor([[10.0], [4.0], [6.0]])  # sorted: 4, 6, 10
    fit = fit_linear_transport(source, target)
    # x mean 2, y mean 20/3; sum (x - 2)(y - 20/3) = (-1)(-8/3) + 0 + (1)(10/3) = 6; sum (x - 2)^2 = 2
    assert fit["omega"].item() == pytest.approx(3.0)
    assert fit["beta"].item() == pytest.approx(20 / 3 - 3 * 2)
    assert (fit["lo"].item(), fit["hi"].item()) == (1.0, 3.0)


def test_fit_equals_polyfit_on_sorted_values():
    g = torch.Generator().manual_seed(0)
    source = torch.randn(200, 6, generator=g) * 2 + 1
    target = torch.randn(200, 6, generator=g) * 0.5 - 3
    fit = fit_linear_transport(source, target)
    xs, ys = np.sort(source.numpy(), axis=0), np.sort(target.numpy(), axis=0)
    for d in range(6):
        slope, intercept = np.polyfit(xs[:, d].astype(np.float64), ys[:, d].astype(np.float64), 1)
        assert fit["omega"][d].item() == pytest.approx(slope, rel=1e-5)
        assert fit["beta"][d].item() == pytest.approx(intercept, rel=1e-5, abs=1e-5)


def test_unequal_counts_read_quantiles():
    xs, ys = sorted_pairs(torch.tensor([[0.0], [1.0]]), torch.tensor([[0.0], [5.0], [10.0]]))
    assert xs.flatten().tolist() == [0.0, 1.0] and ys.flatten().tolist() == [0.0, 10.0]  # the ends, by quantile


def test_hook_inside_and_outside_the_support():
    a = torch.tensor([[[-2.0, 0.5, 1.0, 3.0]]])
    omega, beta = torch.full((4,), 2.0), torch.full((4,), 1.0)
    lo, hi = torch.zeros(4), torch.full((4,), 2.0)
    lam = 0.5
    out = transport_hook(a, None, slope=lam * (omega - 1), shift=lam * beta, lo=lo, hi=hi)
    # inside [0, 2]: (1 - lam) a + lam (2 a + 1); outside: a
    expected = [-2.0, 0.5 * 0.5 + 0.5 * 2.0, 0.5 * 1.0 + 0.5 * 3.0, 3.0]
    assert out.flatten().tolist() == pytest.approx(expected)


def concept(n: int = 16) -> ConceptData:
    return toy_concept(n)


@pytest.fixture(scope="module")
def causal(tiny):
    return learn_intervention(tiny, concept(), "linact", hooks="hook_attn_out", gate=False, max_ppl_increase="none",
                              strength=1.0, progress=False)


@pytest.fixture(scope="module")
def plain(tiny):
    return learn_intervention(tiny, concept(), "linact", hooks="hook_attn_out", causal=False, gate=False,
                              max_ppl_increase="none", strength=1.0, progress=False)


def test_strength_zero_equals_unsteered(tiny, causal):
    assert causal.with_strength(0.0).fwd_hooks() == []
    with causal.with_strength(0.0).applied(tiny):
        steered = tiny(TOKENS)
    torch.testing.assert_close(steered, tiny(TOKENS))
    with causal.applied(tiny):
        assert not torch.allclose(tiny(TOKENS), steered)


def test_strength_above_one_extrapolates_the_edit_at_every_hook(tiny, causal):
    """lambda 2 edits twice as far as lambda 1 from the same input: a + 2 (omega a + beta - a) inside the support."""
    for named in causal.tensors.values():
        a = named["lo"] + torch.rand(1, 3, named["omega"].numel()) * (named["hi"] - named["lo"])  # inside
        twice = causal.spec.hook_fn(named, 2.0, causal.metadata)(a, hook=None)
        once = causal.spec.hook_fn(named, 1.0, causal.metadata)(a, hook=None)
        torch.testing.assert_close(twice - a, 2 * (once - a))
    with causal.with_strength(2.0).applied(tiny):
        assert torch.isfinite(tiny(TOKENS)).all()
    cap = get_method("linact").max_strength
    with pytest.raises(ValueError, match=rf"of linact must be in \[0, {cap:g}\]"):
        causal.with_strength(cap + 0.5)


def test_causal_agrees_on_first_layer_and_follows_the_earlier_maps(tiny, causal, plain):
    first, second = "blocks.0.hook_attn_out", "blocks.1.hook_attn_out"
    for key in ("omega", "beta", "lo", "hi"):
        torch.testing.assert_close(causal.tensors[first][key], plain.tensors[first][key])
    assert not torch.allclose(causal.tensors[second]["omega"], plain.tensors[second]["omega"])
    # reference: pool layer 1 with layer 0's map attached (an ordinary collection), then fit
    only_first = Intervention("linact", {first: causal.tensors[first]}, causal.shape, causal.metadata)
    data = concept()
    with only_first.applied(tiny):
        pooled = collect_responses(tiny, data.texts, data.labels, second, pooling="mean", progress=False).pooled[second]
    labels = torch.tensor(data.labels)
    reference = fit_linear_transport(pooled[labels == 1], pooled[labels == 0])
    for key in ("omega", "beta", "lo", "hi"):
        torch.testing.assert_close(causal.tensors[second][key], reference[key], rtol=1e-4, atol=1e-5)


def test_steering_moves_source_means_toward_target(tiny, causal):
    data = concept()
    name = "blocks.0.hook_attn_out"
    labels = torch.tensor(data.labels)
    before = collect_responses(tiny, data.texts, data.labels, name, pooling="mean", progress=False).pooled[name]
    with causal.applied(tiny):
        after = collect_responses(tiny, data.texts, data.labels, name, pooling="mean", progress=False).pooled[name]
    gap_before = (before[labels == 1].mean(0) - before[labels == 0].mean(0)).norm()
    gap_after = (after[labels == 1].mean(0) - before[labels == 0].mean(0)).norm()
    assert gap_after < gap_before  # the map is fit on pooled means; token values outside the support stay put


def test_save_load_identical_logits(tiny, causal, tmp_path):
    back = Intervention.load(causal.with_strength(0.7).save(tmp_path / "act.safetensors"))
    assert back.method == "linact" and back.strength == 0.7 and back.metadata["causal"] is True
    with causal.with_strength(0.7).applied(tiny):
        a = tiny(TOKENS)
    with back.applied(tiny):
        b = tiny(TOKENS)
    torch.testing.assert_close(a, b)


def test_inspect_rows_and_plot(causal, tmp_path):
    from aura_tl.plots import plot_intervention

    rows = causal.summary_rows()
    assert [r["hook"] for r in rows] == ["blocks.0.hook_attn_out", "blocks.1.hook_attn_out"]
    assert rows[0]["dims"] == 32 and rows[0]["support_median"] > 0
    assert plot_intervention(causal, tmp_path / "act.png").stat().st_size > 10_000



def test_mean_last_pooling_fits_the_maps_on_each_sentences_last_tokens(tiny):
    """`pooling=mean_last:K` (e.g. a continuation after its prompt): the maps equal the fit on the mean of each
    sentence's last K positions, read one sentence at a time from a TransformerLens cache; several rows per
    sentence (`positions:K`) are refused."""
    data = concept(6)
    learned = learn_intervention(tiny, data, "linact", hooks="hook_attn_out", causal=False, gate=False,
                                 max_ppl_increase="none", pooling="mean_last:3", progress=False)
    assert learned.metadata["pooling"] == "mean_last:3"
    tokenizer = hf_tokenizer(tiny)
    pooled: dict[str, list] = {}
    for text in data.texts:  # as the model's own tokenizer reads it (SmolLM2's adds no BOS); the last 3 are its own
        _, cache = tiny.run_with_cache(torch.tensor([tokenizer(text)["input_ids"]]))
        for hook in learned.hook_names:
            pooled.setdefault(hook, []).append(cache[hook][0, -3:].mean(0))
    labels = torch.tensor(data.labels)
    for hook in learned.hook_names:
        rows = torch.stack(pooled[hook])
        by_hand = fit_linear_transport(rows[labels == 1], rows[labels == 0])
        for key in ("omega", "beta"):
            torch.testing.assert_close(learned.tensors[hook][key], by_hand[key], rtol=1e-4, atol=1e-5)
    mean_fit = learn_intervention(tiny, data, "linact", hooks="hook_attn_out", causal=False, gate=False,
                                  max_ppl_increase="none", pooling="mean", progress=False)
    assert not torch.allclose(mean_fit.tensors[hook]["omega"], learned.tensors[hook]["omega"])
    with pytest.raises(ValueError, match="sentence pooling"):
        learn_intervention(tiny, data, "linact", pooling="positions:3", progress=False)
