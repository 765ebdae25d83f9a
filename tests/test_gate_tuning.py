"""Gates tuned through the model (`gate=tuned`): the loss pieces by hand (KL against torch's `kl_div`, the later-half
mask), tuning lowers the very loss it optimises on a fixed batch (each part when weighted alone, on a tiny Llama),
and a learned file carries its record and steers as sigmoid(w . a + b) written out by hand, after a save and a load."""

from __future__ import annotations

import dataclasses
import json
from functools import partial

import pytest
import torch
from toy_concept import toy_concept

from aura_tl.backends import hooks_applied
from aura_tl.gate_tuning import (
    TUNE_STRENGTH_CAP,
    LossRows,
    Tuning,
    TunedGateOptions,
    continuations,
    counted_from,
    later_halves,
    mean_kl,
    padded,
    rows_from_bos,
    tune_gates,
    tuned_intervention,
)
from aura_tl.gating import gated_hook, get_gate
from aura_tl.intervention import Intervention, hook_function
from aura_tl.learn import learn_intervention
from aura_tl.methods import get_method
from aura_tl.models import hf_tokenizer, start_token_id
from aura_tl.onpolicy import clean_pairs, source_rows, toxic_pairs

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
    assert counted_from(mask, [2, 1]).tolist() == [[0, 0, 1, 1, 1], [0, 1, 1, 0, 0]]
    built = rows_from_bos(tiny, ["hello there world", ""], max_tokens=2)
    assert built == [[start_token_id(hf_tokenizer(tiny)),
                      *hf_tokenizer(tiny)("hello there world", add_special_tokens=False)["input_ids"][:2]]]
    halves = later_halves(tiny, ["hello there world", "a b c d e f"], max_tokens=16)
    assert halves.starts == [len(row) // 2 for row in halves.rows]


def test_continuations_count_from_the_prompts_last_token(tiny):
    tokenizer = hf_tokenizer(tiny)
    ids = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    bos = start_token_id(tokenizer)
    head, joined = ids("So he said you are"), ids("So he said you are a total idiot and")
    assert joined[:len(head)] == head and len(joined) > len(head) + 2
    made = continuations(tiny, [("So he said you are", "a total idiot and")], max_tokens=64)
    assert made.rows == [[bos, *joined]] and made.starts == [len(head)]  # position len(head) is the prompt's last
    # too long: the prompt loses its first tokens, the start moves with them, the continuation stays whole
    short = continuations(tiny, [("So he said you are", "a total idiot and")], max_tokens=len(joined) - 2)
    assert short.rows == [[bos, *joined[2:]]] and short.starts == [len(head) - 2]
    # an empty continuation gives no row
    assert continuations(tiny, [("So he said you are", "")], max_tokens=64).rows == []


def test_onpolicy_pairs_read_the_toxic_rows_of_a_file(tiny, tmp_path):
    path = tmp_path / "onpolicy.jsonl"
    rows = [{"text": "you idiot", "label": 1, "score": 0.9, "prompt": "He said"},
            {"text": "hello", "label": 0, "score": 0.1, "prompt": "She said"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert toxic_pairs(source_rows(tiny, str(path))) == [("He said", "you idiot")]
    assert TunedGateOptions(gate_tune_toxic=str(path)).gate_tune_toxic == str(path)
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"text": "x", "label": 1}) + "\n")
    with pytest.raises(ValueError, match="aura-tl onpolicy"):
        source_rows(tiny, str(other))
    for bad in ("onpolicy:0", "onpolicy", "nothing.jsonl"):
        with pytest.raises(ValueError, match="gate_tune_toxic"):
            TunedGateOptions(gate_tune_toxic=bad)
        with pytest.raises(ValueError, match="gate_tune_clean"):
            TunedGateOptions(gate_tune_clean=bad)


def test_clean_pairs_are_the_clean_continuations_of_prompts_that_led_to_toxic_ones(tiny, tmp_path):
    path = tmp_path / "onpolicy.jsonl"
    rows = [{"text": "you idiot", "label": 1, "score": 0.9, "prompt": "He said"},
            {"text": "hello there", "label": 0, "score": 0.1, "prompt": "He said"},
            {"text": "good morning", "label": 0, "score": 0.2, "prompt": "She said"},  # her prompt led to none
            {"text": "thanks a lot", "label": 0, "score": 0.0, "prompt": "He said"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert clean_pairs(source_rows(tiny, str(path))) == [("He said", "hello there"), ("He said", "thanks a lot")]


def fixed_batch_loss(model, edits, gates, toxic, neutral, keep):
    """The tuning loss with `gates` on every text at once (what `tune_gates` reads a batch at a time)."""
    toxic = toxic if isinstance(toxic, LossRows) else later_halves(model, toxic, 16)
    tox, neu = toxic.rows, rows_from_bos(model, neutral, 16)
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
    toxic_part = float(mean_kl(steered, gated[:k], counted_from(mask[:k], toxic.starts)))
    neutral_part = float(mean_kl(unsteered, gated[k:], mask[k:]))
    return toxic_part + keep * neutral_part, toxic_part, neutral_part


def half_open_start(model):
    """A token-gated Linear-AcT on the toy concept, its edits at lambda 2 and gates half open everywhere (w = 0,
    b = 0, so that both parts of the loss have room to fall), and the concept's toxic and neutral sentences."""
    data = toy_concept(8)
    iv = learn_intervention(model, data, "linact", max_ppl_increase="none", gate="token", gate_neutral="none",
                            strength=2, progress=False)
    edits = {h: hook_function(iv.spec, None, t, 2.0, iv.metadata) for h, t in iv.tensors.items()}
    fitted = {h: {"gate_w": torch.zeros_like(t["gate_w"]), "gate_b": torch.zeros(1)} for h, t in iv.tensors.items()}
    toxic = [t for t, y in zip(data.texts, data.labels) if y == 1]
    neutral = [t for t, y in zip(data.texts, data.labels) if y == 0]
    return iv, edits, fitted, toxic, neutral


@pytest.mark.parametrize("keep", [0.0, 10.0])
def test_tuning_lowers_the_loss_it_optimises(tiny, keep):
    iv, edits, fitted, toxic, neutral = half_open_start(tiny)
    tuning = Tuning(strength=2.0, steps=30, lr=0.05, keep=keep, batch=16, max_tokens=16, seed=0,
                    clean_weight=1.0)
    tuned, record = tune_gates(tiny, edits, fitted, later_halves(tiny, toxic, 16), neutral, tuning, progress=False)
    before = fixed_batch_loss(tiny, edits, fitted, toxic, neutral, keep)
    after = fixed_batch_loss(tiny, edits, tuned, toxic, neutral, keep)
    assert after[0] < 0.9 * before[0]  # the whole batch each step: the loss it optimised went down
    assert record["loss"]["toxic"]["first"] == pytest.approx(before[1], rel=1e-3)
    if keep == 0.0:  # alone, the toxic part opens the gates: the neutral part can only rise
        assert after[2] >= before[2] - 1e-6
    assert set(tuned) == set(fitted) and not torch.equal(tuned[iv.hook_names[0]]["gate_w"],
                                                         fitted[iv.hook_names[0]]["gate_w"])


def test_tuning_on_continuations_lowers_their_loss(tiny):
    _, edits, fitted, toxic, neutral = half_open_start(tiny)
    pairs = continuations(tiny, [(" ".join(t.split()[:3]), " ".join(t.split()[3:])) for t in toxic], 16)
    assert pairs.rows and any(start > 1 for start in pairs.starts)
    tuning = Tuning(strength=2.0, steps=30, lr=0.05, keep=0.0, batch=16, max_tokens=16, seed=0,
                    clean_weight=1.0)
    tuned, record = tune_gates(tiny, edits, fitted, pairs, neutral, tuning, progress=False)
    before = fixed_batch_loss(tiny, edits, fitted, pairs, neutral, 0.0)
    after = fixed_batch_loss(tiny, edits, tuned, pairs, neutral, 0.0)
    # the loss it records is the one by hand over the continuations' positions, and tuning lowers it
    assert record["loss"]["toxic"]["first"] == pytest.approx(before[1], rel=1e-3)
    assert after[1] < 0.9 * before[1]


def clean_part(model, edits, gates, clean: LossRows) -> float:
    """KL(unsteered || gated) over the clean rows' counted positions, by hand."""
    batch = padded(clean.rows, start_token_id(hf_tokenizer(model)), "cpu")
    hooks = [(n, partial(gated_hook, inner=edits[n], value=partial(get_gate("token").value, tensors=gates[n])))
             for n in edits]
    with torch.no_grad():
        unsteered = model(batch.tokens, attention_mask=batch.attention_mask).log_softmax(-1)
        with hooks_applied(model, hooks):
            gated = model(batch.tokens, attention_mask=batch.attention_mask).log_softmax(-1)
    return float(mean_kl(unsteered, gated, counted_from(batch.attention_mask.float(), clean.starts)))


def test_clean_continuations_keep_the_gate_shut_where_they_go(tiny):
    # toxic openings continued toxic (the edit should act) and continued politely (the model should be left alone)
    _, edits, fitted, toxic, neutral = half_open_start(tiny)
    openings = [" ".join(t.split()[:3]) for t in toxic]
    moved = continuations(tiny, [(o, " ".join(t.split()[3:])) for o, t in zip(openings, toxic)], 16)
    clean = continuations(tiny, [(o, " ".join(n.split()[3:])) for o, n in zip(openings, neutral)], 16)
    tuning = Tuning(strength=2.0, steps=30, lr=0.05, keep=0.0, batch=16, max_tokens=16, seed=0,
                    clean_weight=1.0)
    alone, _ = tune_gates(tiny, edits, fitted, moved, neutral, tuning, progress=False)
    beside, record = tune_gates(tiny, edits, fitted, moved, neutral, tuning, clean=clean, progress=False)
    # the part it records is the one by hand, and with it the clean continuations move less than without it
    assert record["loss"]["clean"]["first"] == pytest.approx(clean_part(tiny, edits, fitted, clean), rel=1e-3)
    assert record["texts"]["clean"] == len(clean.rows) and record["clean_weight"] == 1.0
    assert clean_part(tiny, edits, beside, clean) < 0.5 * clean_part(tiny, edits, alone, clean)
    # weighted 0, the clean rows ride along in the batch and change nothing
    unweighted, _ = tune_gates(tiny, edits, fitted, moved, neutral, dataclasses.replace(tuning, clean_weight=0.0),
                               clean=clean, progress=False)
    assert clean_part(tiny, edits, unweighted, clean) == pytest.approx(clean_part(tiny, edits, alone, clean), rel=1e-3)
    with pytest.raises(ValueError, match="clean continuations"):
        tune_gates(tiny, edits, fitted, moved, neutral, tuning, clean=LossRows([], []), progress=False)


def test_tuned_rule_end_to_end(tiny, tmp_path):
    iv = learn_intervention(tiny, toy_concept(8), "linact", max_ppl_increase="none", gate="tuned",
                            gate_neutral="none", gate_tune_steps=3, gate_tune_batch=4, strength=2,
                            gate_tune_toxic="concept", gate_tune_clean="none", progress=False)  # mechanics, not text
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
    with pytest.raises(ValueError, match="gate_tune_clean_weight"):
        TunedGateOptions(gate_tune_clean_weight=-0.5)


def test_gates_are_tuned_at_the_learned_lambda_capped_unless_told(tiny):
    """The lambda gates are tuned at: the intervention's own below `TUNE_STRENGTH_CAP`, the cap above it (a learned
    12 is calibration's pick, not a lambda to tune at), `gate_tune_strength` over both."""
    data = toy_concept(8)
    iv = learn_intervention(tiny, data, "linact", max_ppl_increase="none", gate="token", gate_neutral="none",
                            strength=2, progress=False)
    brief = TunedGateOptions(gate_neutral="none", gate_tune_steps=1, gate_tune_batch=4, gate_tune_toxic="concept",
                             gate_tune_clean="none")
    for learned, told, expected in ((12.0, None, TUNE_STRENGTH_CAP), (3.0, None, 3.0), (12.0, 6.0, 6.0),
                                    (1.5, 6.0, 6.0)):
        options = dataclasses.replace(brief, gate_tune_strength=told)
        tuned = tuned_intervention(tiny, dataclasses.replace(iv, strength=learned), data, options, progress=False)
        assert tuned.metadata["gate"]["tuned"]["strength"] == expected and tuned.strength == learned
    assert TUNE_STRENGTH_CAP < get_method("linact").max_strength  # calibration may choose past it


def test_responses_alone_cannot_tune_and_say_so(tiny, caplog):
    from aura_tl.learn import gates_from_responses
    from aura_tl.responses import collect_responses

    data = toy_concept(6)
    iv = learn_intervention(tiny, data, "linact", gate="probe", max_ppl_increase="none", progress=False)
    responses = collect_responses(tiny, data.texts, data.labels, iv.hook_names, pooling="positions:16", progress=False)
    with caplog.at_level("WARNING"):
        tuned = gates_from_responses(iv, responses, "tuned")
        assert "'tuned' is refined by running the model" in caplog.text
        caplog.clear()
        token = gates_from_responses(iv, responses, "token")
        assert "refined" not in caplog.text
    for hook in iv.hook_names:  # fitted as its base rule, the token gate
        torch.testing.assert_close(tuned.tensors[hook]["gate_w"], token.tensors[hook]["gate_w"])
