"""LinEAS-style end-to-end transport: the loss against a hand computation and scipy, the one-hook optimum against
Linear-AcT's closed form (least squares on sorted pairs minimises the same 1-D Wasserstein loss), the downstream
layer pulling the earlier map, sparsity that leaves the model alone, and files."""

import numpy as np
import pytest
import torch
from scipy.stats import wasserstein_distance

from aura_tl.data import ConceptData
from aura_tl.intervention import Intervention
from aura_tl.learn import learn_intervention
from aura_tl.methods import get_method
from aura_tl.methods._transport import WHOLE_LINE
from aura_tl.methods.linact import fit_linear_transport
from aura_tl.methods.lineas import midpoint_quantiles, wasserstein2_per_dim
from aura_tl.responses import collect_responses

TOXIC = [f"you are a stupid {w} and I hate you" for w in ("idiot", "moron", "fool", "clown", "loser", "jerk")]
CLEAN = [f"the {w} was kind and we thanked it" for w in ("weather", "teacher", "river", "garden", "morning", "dog")]
DATA = ConceptData(TOXIC + CLEAN, [1] * 6 + [0] * 6, "test", "text")


def test_loss_by_hand_and_against_scipy():
    source = torch.tensor([[3.0, 0.0], [1.0, 0.0], [2.0, 4.0]])
    target = torch.tensor([[4.0, 1.0], [6.0, 1.0], [10.0, 1.0]])  # sorted, as the learner keeps it
    # column 0 sorted: (1, 4), (2, 6), (3, 10) -> (9 + 16 + 49) / 3; column 1: (0, 1), (0, 1), (4, 1) -> 11 / 3
    assert wasserstein2_per_dim(source, target).tolist() == pytest.approx([74 / 3, 11 / 3])
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(50, 1, generator=g), torch.randn(50, 1, generator=g) * 3 + 1
    # equal counts and one-signed gaps: W2^2 >= W1^2, equal when every sorted gap has the same size
    shifted = (x + 2.5).sort(dim=0).values
    assert float(wasserstein2_per_dim(x, shifted)) == pytest.approx(wasserstein_distance(x[:, 0], x[:, 0] + 2.5) ** 2)
    assert float(wasserstein2_per_dim(x, y.sort(dim=0).values)) >= wasserstein_distance(x[:, 0], y[:, 0]) ** 2 - 1e-6


def test_a_small_batch_reads_the_target_at_its_midpoint_quantiles():
    """By hand: 2 points read 4 sorted values at levels 1/4 and 3/4 (positions 0.5 and 2.5). And the reason: the
    slope that best maps 8-sample batches onto a large sample of the same distribution is about 1 this way; read at
    the ends (the batch's extremes against the whole set's) it would widen everything."""
    assert midpoint_quantiles(torch.tensor([[0.0], [1.0], [2.0], [3.0]]), 2).flatten().tolist() == [0.5, 2.5]
    g = torch.Generator().manual_seed(1)
    population = torch.randn(4000, 1, generator=g).sort(dim=0).values
    batches = torch.randn(500, 8, generator=g).sort(dim=1).values
    midpoints = midpoint_quantiles(population, 8)[:, 0]
    ends = population[torch.linspace(0, 3999, 8).round().long(), 0]
    for reading, expected in ((midpoints, (0.9, 1.1)), (ends, (1.4, 3.0))):
        x = batches - batches.mean(1, keepdim=True)  # least-squares slope of reading ~ batch, over all batches
        slope = float((x * (reading - reading.mean())).sum() / x.pow(2).sum())
        assert expected[0] < slope < expected[1], (slope, expected)


def test_one_hook_converges_to_the_linear_act_closed_form(tiny):
    """With one hook, no sparsity and every toxic sentence in each step, the loss is the per-dimension W2 between
    omega x + beta and y, which least squares on sorted pairs minimises (omega > 0): the two must agree."""
    hook = "blocks.0.hook_attn_out"
    iv = learn_intervention(tiny, DATA, "lineas", hooks=hook, steps=1000, lr=0.05, step_batch=6, progress=False)
    responses = collect_responses(tiny, DATA.texts, DATA.labels, hook, pooling="mean", progress=False)
    pooled, labels = responses.pooled[hook], responses.labels
    closed = fit_linear_transport(pooled[labels == 1], pooled[labels == 0])
    assert (closed["omega"] > 0).all()
    learned = iv.tensors[hook]
    np.testing.assert_allclose(learned["omega"], closed["omega"], atol=2e-3, rtol=2e-3)
    source = pooled[labels == 1]  # the two maps send the toxic sentences to the same places
    gap = (learned["omega"] * source + learned["beta"]) - (closed["omega"] * source + closed["beta"])
    assert (gap.abs() <= 1e-2 * pooled[labels == 0].std(0)).all(), gap.abs().max()  # 1 % of the target's spread
    assert iv.metadata["loss"]["last"] < iv.metadata["loss"]["first"]


def test_the_later_layer_moves_the_earlier_map(tiny):
    """End to end: with maps at both layers, layer 0's map is not its one-layer optimum (layer 1's loss pulls it)."""
    hooks = "blocks.0.hook_attn_out,blocks.1.hook_attn_out"
    both = learn_intervention(tiny, DATA, "lineas", hooks=hooks, steps=300, lr=0.05, step_batch=6, progress=False)
    alone = learn_intervention(tiny, DATA, "lineas", hooks="blocks.0.hook_attn_out", steps=300, lr=0.05,
                               step_batch=6, progress=False)
    first = "blocks.0.hook_attn_out"
    gap = (both.tensors[first]["omega"] - alone.tensors[first]["omega"]).abs().max()
    assert float(gap) > 1e-2


def test_strong_sparsity_leaves_the_model_alone(tiny):
    iv = learn_intervention(tiny, DATA, "lineas", hooks="blocks.*.hook_attn_out", steps=150, lr=0.02,
                            sparsity=50.0, step_batch=6, progress=False)
    for tensors in iv.tensors.values():
        assert (tensors["omega"] == 1).all() and (tensors["beta"] == 0).all()
    assert set(iv.metadata["moved_fraction"].values()) == {0.0}
    ids = torch.tensor([[1, 5, 9, 13]])
    with torch.inference_mode():
        plain = tiny(ids)
        with iv.applied(tiny):
            torch.testing.assert_close(tiny(ids), plain)


def test_saved_lineas_reproduces_logits_and_refuses_bad_options(tiny, tmp_path):
    iv = learn_intervention(tiny, DATA, "lineas", hooks="blocks.*.hook_mlp_out", steps=20, lr=0.05, step_batch=4,
                            strength=0.5, progress=False)
    loaded = Intervention.load(iv.save(tmp_path / "lineas.safetensors"))
    ids = torch.tensor([[1, 5, 9, 13, 2]])
    with torch.inference_mode():
        plain = tiny(ids)
        with iv.applied(tiny):
            first = tiny(ids)
        with loaded.applied(tiny):
            again = tiny(ids)
    torch.testing.assert_close(again, first)
    assert float((first - plain).abs().max()) > 1e-4 and loaded.strength == 0.5
    assert all(float(t["hi"].min()) == WHOLE_LINE == -float(t["lo"].max()) for t in loaded.tensors.values())
    for bad in ({"steps": 0}, {"lr": -1}, {"sparsity": -0.1}, {"step_batch": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            get_method("lineas").options(**bad)


def test_keeping_neutral_text_moves_it_less(tiny):
    """`keep_neutral` trades: non-toxic text's activations at the last hooked layer change less than without it."""
    hooks = "blocks.*.hook_attn_out"
    options = dict(hooks=hooks, steps=150, lr=0.05, step_batch=6, progress=False)
    free = learn_intervention(tiny, DATA, "lineas", **options)
    kept = learn_intervention(tiny, DATA, "lineas", keep_neutral=100.0, **options)
    tokens = tiny.to_tokens(CLEAN)
    last = "blocks.1.hook_attn_out"

    def change(iv) -> float:
        with torch.inference_mode():
            _, plain = tiny.run_with_cache(tokens, names_filter=last)
            with iv.applied(tiny):
                _, steered = tiny.run_with_cache(tokens, names_filter=last)
        return float((steered[last] - plain[last]).pow(2).mean())

    assert change(kept) < 0.5 * change(free)
    assert kept.metadata["loss"]["last"] > free.metadata["loss"]["last"]  # bought with a worse toxic -> clean match
