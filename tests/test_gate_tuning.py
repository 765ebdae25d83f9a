"""Gates tuned through the model (`gate=tuned`): the loss pieces by hand (KL against torch's `kl_div`, the later-half
mask), tuning lowers the very loss it optimises on a fixed batch (each part when weighted alone, on a tiny Llama),
and a learned file carries its record and steers as sigmoid(w . a + b) written out by hand, after a save and a load."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from toy_concept import toy_concept

from aura_tl.backends import hooks_applied
from aura_tl.gate_tuning import (
    Tuning,
    later_half,
    mean_kl,
    padded,
    rows_from_bos,
    tune_gates,
)
from aura_tl.gating import gated_hook, get_gate
from aura_tl.intervention import Intervention, hook_function
from aura_tl.learn import learn_intervention
from aura_tl.models import hf_tokenizer, start_token_id

TOKENS = torch.tensor([[5, 17, 300, 4000, 12], [7, 8, 9, 10, 11]])


def test_mean_kl_is_torchs_kl_div_over_the_weighted_positions():
    torch.manual_seed(0)
    teacher, student = torch.randn(2, 3, 7).log_softmax(-1), torch.randn(2, 3, 7).log_softmax(-1)
    weights = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]])
    per_position = torch.nn.functional.kl_div(student, teacher, log_target=True, reduction="none").sum(-1)
    expected = per_position[weights.bool()].mean()
    assert float(mean_kl(teacher, student, weights)) == pytest.approx(float(expected), rel=1e-6)


def test_rows_padding_and_later_half_by_hand(tiny):
    rows = [[9, 1, 2, 3, 4], [9, 5, 6]]
    batch = padded(rows, 0, "cpu")
    tokens, mask = batch.tokens, batch.attention_mask.float()
    assert tokens.tolist() == [[9, 1, 2, 3, 4], [9, 5, 6, 0, 0]]
    assert mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    # a row of 5 keeps positions 2-4, a row of 3 keeps 1-2
    assert later_half(mask).tolist() == [[0, 0, 1, 1, 1], [0, 1, 1, 0, 0]]
    built = rows_from_bos(tiny, ["hello there world", ""], max_tokens=2)
    assert built == [[start_token_id(hf_tokenizer(tiny)),
                      *hf_tokenizer(tiny)("hello there world", add_special_tokens=False)["input_ids"][:2]]]


def fixed_batch_loss(model, edits, gates, toxic, neutral, keep):
    """The tuning loss with `gates` on every text at once (what `tune_gates` reads a batch at a time)."""
    tox, neu = rows_from_bos(model, toxic, 16), rows_from_bos(model, neutral, 16)
    batch = padded(tox + neu, start_token_id(hf_tokenizer(model)), "cpu")
    tokens, attention, mask = batch.tokens, batch.attention_mask, batch.attention_mask.float()
    k = len(tox)
    hooks = [(n, partial(gated_hook, inner=edits[n], value=partial(get_gate("token").value, tensors=gates[n])))
             for n in edits]
    with torch.no_grad():
        with hooks_applied(model, list(edits.items())):
            steered = model(tokens[:k], attention_mask=attention[:k]).log_softmax(-1)
        unsteered = model(tokens[k:], attention_mask=attention[k:]).log_softmax(-1)
        with hooks_applied(model, hooks):
            gated = model(tokens, attention_mask=attention).log_softmax(-1)
    toxic_part = float(mean_kl(steered, gated[:k], later_half(mask[:k])))
    neutral_part = float(mean_kl(unsteered, gated[k:], mask[k:]))
    return toxic_part + keep * neutral_part, toxic_part, neutral_part


@pytest.mark.parametrize("keep", [0.0, 10.0])
def test_tuning_lowers_the_loss_it_optimises(tiny, keep):
    data = toy_concept(8)
    iv = learn_intervention(tiny, data, "linact", max_ppl_increase="none", gate="token", gate_neutral="none",
                            strength=2, progress=False)
    edits = {h: hook_function(iv.spec, None, t, 2.0, iv.metadata) for h, t in iv.tensors.items()}
    # from a gate half open everywhere (w = 0, b = 0), so that both parts of the loss have room to fall
    fitted = {h: {"gate_w": torch.zeros_like(t["gate_w"]), "gate_b": torch.zeros(1)} for h, t in iv.tensors.items()}
    toxic = [t for t, y in zip(data.texts, data.labels) if y == 1]
    neutral = [t for t, y in zip(data.texts, data.labels) if y == 0]
    tuning = Tuning(strength=2.0, steps=30, lr=0.05, keep=keep, batch=16, max_tokens=16, seed=0)
    tuned, record = tune_gates(tiny, edits, fitted, toxic, neutral, tuning, progress=False)
    before = fixed_batch_loss(tiny, edits, fitted, toxic, neutral, keep)
    after = fixed_batch_loss(tiny, edits, tuned, toxic, neutral, keep)
    assert after[0] < 0.9 * before[0]  # the whole batch each step: the loss it optimised went down
    assert record["loss"]["toxic"]["first"] == pytest.approx(before[1], rel=1e-3)
    if keep == 0.0:  # alone, the toxic part opens the gates: the neutral part can only rise
        assert after[2] >= before[2] - 1e-6
    assert set(tuned) == set(fitted) and not torch.equal(tuned[iv.hook_names[0]]["gate_w"],
                                                         fitted[iv.hook_names[0]]["gate_w"])


def test_tuned_rule_end_to_end(tiny, tmp_path):
    iv = learn_intervention(tiny, toy_concept(8), "linact", max_ppl_increase="none", gate="tuned",
                            gate_neutral="none", gate_tune_steps=3, gate_tune_batch=4, strength=2, progress=False)
    record = iv.metadata["gate"]["tuned"]
    assert iv.gate_rule is get_gate("tuned") and record["steps"] == 3 and record["strength"] == 2.0
    assert len(record["loss"]["toxic"]["every_25"]) == 1
    loaded = Intervention.load(iv.save(tmp_path / "tuned.safetensors"))
    assert loaded.gate_rule is get_gate("tuned")

    def by_hand(activation, hook, name):
        t, lam = loaded.tensors[name], loaded.strength
        inside = (activation >= t["lo"]) & (activation <= t["hi"])
        edited = torch.where(inside, (1 - lam) * activation + lam * (t["omega"] * activation + t["beta"]), activation)
        gate = torch.sigmoid(activation @ t["gate_w"] + t["gate_b"])[..., None]
        return activation + gate * (edited - activation)

    with torch.inference_mode():
        plain = tiny(TOKENS)
        with loaded.applied(tiny):
            steered = tiny(TOKENS)
        expected = tiny.run_with_hooks(TOKENS, fwd_hooks=[(h, partial(by_hand, name=h)) for h in loaded.hook_names])
    torch.testing.assert_close(steered, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(steered, plain, atol=1e-4)
    with pytest.raises(ValueError, match="gate_tune_keep"):
        learn_intervention(tiny, toy_concept(4), "linact", gate="tuned", gate_tune_keep=-1, progress=False)


def test_responses_alone_cannot_tune_and_say_so(tiny, caplog):
    from aura_tl.learn import gates_from_responses
    from aura_tl.responses import collect_responses

    data = toy_concept(6)
    iv = learn_intervention(tiny, data, "linact", max_ppl_increase="none", progress=False)
    responses = collect_responses(tiny, data.texts, data.labels, iv.hook_names, pooling="positions:16", progress=False)
    with caplog.at_level("WARNING"):
        tuned = gates_from_responses(iv, responses, "tuned")
        assert "'tuned' is refined by running the model" in caplog.text
        caplog.clear()
        token = gates_from_responses(iv, responses, "token")
        assert "refined" not in caplog.text
    for hook in iv.hook_names:  # fitted as its base rule, the token gate
        torch.testing.assert_close(tuned.tensors[hook]["gate_w"], token.tensors[hook]["gate_w"])
