"""The token gate (`gate=token`): `positions:K` pooling picks the positions a hand count picks, its logistic fit is
sklearn's, it learns from the later half of toxic texts and every position of the others (neutral text added as
non-toxic), it runs end to end causally, and on SmolLM2 it stays more closed on task-length text than the probe."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from toy_concept import toy_concept

from aura_tl.data import ConceptData
from aura_tl.gating import TOKEN_POSITIONS, fit_logistic, get_gate, token_rows
from aura_tl.intervention import Intervention
from aura_tl.learn import gates_from_responses, learn_intervention, with_neutral_text
from aura_tl.models import hf_tokenizer
from aura_tl.neutral_text import (
    WIKITEXT_NEUTRAL_DOCS,
    neutral_texts,
    own_samples,
    wikitext_neutral,
)
from aura_tl.responses import collect_responses, content_spans, pool, pool_spans, spread

HOOKS = ("blocks.0.hook_attn_out", "blocks.1.hook_attn_out")


def concept(n: int = 10) -> ConceptData:
    return toy_concept(n)


def test_positions_pooling_picks_spread_positions_by_hand():
    activation = torch.arange(2 * 7 * 2, dtype=torch.float32).reshape(2, 7, 2)
    content = [[False, True, True, True], [False, True, True, True, True, True, True]]
    mask = torch.zeros(2, 7, dtype=torch.bool)
    for row, flags in enumerate(content):
        mask[row, :len(flags)] = torch.tensor(flags)
    # row 0: content 1..3 -> positions 1, 2, 3 (K = 3); row 1: content 1..6 -> 1 + (0, 2.5 -> 2 half to even, 5)
    expected = torch.stack([activation[0, 1], activation[0, 2], activation[0, 3],
                            activation[1, 1], activation[1, 3], activation[1, 6]])
    assert spread(6, 3).tolist() == [0, 2, 5] and spread(2, 4).tolist() == [0, 0, 1, 1]
    torch.testing.assert_close(pool(activation, mask, "positions:3"), expected)
    torch.testing.assert_close(pool_spans(activation, content_spans(content), "positions:3"), expected)


def test_positions_rows_are_in_text_order(tiny):
    texts = ["a much longer sentence than the others, with many words in it", "short one", "mid length text here"]
    got = collect_responses(tiny, texts, [1, 0, 1], HOOKS[0], pooling="positions:4", batch_size=2, progress=False)
    tokenizer = hf_tokenizer(tiny)
    assert got.pooled[HOOKS[0]].shape == (12, tiny.cfg.d_model)
    for i, text in enumerate(texts):
        ids = tokenizer(text)["input_ids"]
        _, cache = tiny.run_with_cache(torch.tensor([ids]), names_filter=HOOKS[0])
        content = torch.tensor([t not in tokenizer.all_special_ids for t in ids]).nonzero()[:, 0]
        torch.testing.assert_close(got.pooled[HOOKS[0]][4 * i:4 * i + 4],
                                   cache[HOOKS[0]][0, content[spread(len(content), 4)]], rtol=1e-4, atol=1e-5)


def test_logistic_fit_is_sklearns():
    torch.manual_seed(0)
    x = torch.randn(400, 5) * 3 + 1
    y = (x[:, 0] + 0.5 * x[:, 1] + 0.3 * torch.randn(400) > 2.8).float()
    w, b = fit_logistic(x, y, 1e-2)
    center, scale = x.double().mean(0), x.double().std(0)
    # sklearn: C sum_i c_i loss_i + |w|^2 / 2 with balanced c_i = n / (2 n_class); ours: sum_i loss_i / (2 n_class)
    # + l2 |w|^2 / 2, so C = 1 / (l2 n)
    reference = LogisticRegression(C=1 / (1e-2 * 400), class_weight="balanced", tol=1e-10, max_iter=10_000)
    reference.fit(((x.double() - center) / scale).numpy(), y.numpy())
    w_ref = torch.tensor(reference.coef_[0]) / scale
    torch.testing.assert_close(w.double(), w_ref, rtol=1e-4, atol=1e-5)
    assert float(b) == pytest.approx(reference.intercept_[0] - float(center @ w_ref), abs=1e-4)


def test_token_rows_take_the_later_half_of_toxic_texts():
    k = TOKEN_POSITIONS
    pooled = torch.arange(3 * k, dtype=torch.float32)[:, None]  # text i, position j -> i k + j
    x, y = token_rows(pooled, torch.tensor([1, 0, 1]))
    expected = [*range(k // 2, k), *range(2 * k + k // 2, 3 * k), *range(k, 2 * k)]
    assert x[:, 0].tolist() == expected and y.tolist() == [1.0] * k + [0.0] * k
    with pytest.raises(ValueError, match="positions:16"):
        token_rows(torch.zeros(5, 1), torch.tensor([1, 0]))


def test_token_gate_runs_end_to_end_causally(tiny, tmp_path):
    iv = learn_intervention(tiny, concept(), "linact", hooks="hook_attn_out", max_ppl_increase="none", gate="token",
                            gate_neutral="none", progress=False)
    assert iv.gate_rule is get_gate("token") and iv.metadata["gate"]["pooling"] == f"positions:{TOKEN_POSITIONS}"
    assert iv.metadata["gate"]["options"] == {"gate_token_l2": 1e-3, "gate_neutral": "none"}
    # the first hook's gate is the rule's own fit on responses no earlier edit touched
    data = concept()
    first = collect_responses(tiny, data.texts, data.labels, HOOKS[0], pooling=f"positions:{TOKEN_POSITIONS}",
                              progress=False)
    fitted = get_gate("token").fit(first.pooled[HOOKS[0]], torch.tensor(data.labels), get_gate("token").options())
    torch.testing.assert_close(iv.tensors[HOOKS[0]]["gate_w"], fitted["gate_w"], rtol=1e-3, atol=1e-4)
    loaded = Intervention.load(iv.save(tmp_path / "token.safetensors"))
    assert loaded.gate_rule is get_gate("token")
    # held responses must be pooled as the rule reads them
    mean = collect_responses(tiny, data.texts, data.labels, "hook_attn_out", pooling="mean", progress=False)
    with pytest.raises(ValueError, match="positions:16"):
        gates_from_responses(iv, mean, "token")


def test_gate_neutral_option_and_sources(tiny, tmp_path):
    with pytest.raises(ValueError, match="own:N"):
        get_gate("token").options(gate_neutral="own:many")
    with pytest.raises(ValueError, match="piqa:N"):
        get_gate("token").options(gate_neutral="wikitext:300,piqa:all")
    from aura_tl.gating import NEUTRAL_SOURCES
    from aura_tl.neutral_text import READERS

    assert set(READERS) == set(NEUTRAL_SOURCES)  # every name the option accepts has a reader, and no more
    with pytest.raises(FileNotFoundError, match="neither"):
        neutral_texts(tiny, "no/such/file.txt")
    lines = tmp_path / "neutral.txt"
    lines.write_text("first text\n\nsecond text\n", encoding="utf-8")
    assert neutral_texts(tiny, f"none,{lines}") == ["first text", "second text"]
    grown = with_neutral_text(tiny, concept(2), str(lines), progress=False)
    assert grown.texts[-2:] == ["first text", "second text"] and grown.labels == [1, 1, 0, 0, 0, 0]


def test_own_samples_differ_across_batches_and_repeat_with_the_seed(tiny):
    first = own_samples(tiny, 6, tokens=8, batch_size=3, progress=False)
    assert len(set(first)) == len(first) == 6  # batches are seeded apart: no batch repeats another
    assert own_samples(tiny, 6, tokens=8, batch_size=3, progress=False) == first


def test_wikitext_neutral_reads_documents_the_report_and_calibration_never_read(tiny, shared_data):
    from aura_tl.calibrate import WIKITEXT_DOCS, wikitext_documents

    docs = wikitext_documents((shared_data / "wikitext2" / "wiki.test.raw").read_text(encoding="utf-8"))
    texts = wikitext_neutral(tiny, 20)
    assert len(texts) == 20 and WIKITEXT_NEUTRAL_DOCS.start >= WIKITEXT_DOCS.stop
    assert all(t in "".join(docs[WIKITEXT_NEUTRAL_DOCS]) for t in texts)
    assert not any(t in "".join(docs[:WIKITEXT_DOCS.stop]) for t in texts)


@pytest.mark.slow
def test_token_gate_is_more_closed_than_the_probe_on_task_text(smol, shared_data):
    """On SmolLM2's last-layer attention output, learned from 120 rtp-learn sentences per class (+ 32 own samples
    for the token gate): the token gate opens less on 40 PIQA answers than the probe, and still more on toxic text
    than on them."""
    from aura_tl.data import load_concept_data
    from aura_tl.learn import learn_gates

    hook = "blocks.29.hook_attn_out"
    data = load_concept_data("rtp-learn", max_per_class=120, seed=0)
    plain = learn_intervention(smol, data, "meanact", hooks=hook, causal=False, max_ppl_increase="none",
                               progress=False)
    probe = learn_gates(smol, plain, data, "probe", progress=False)
    token = learn_gates(smol, plain, data, "token", get_gate("token").options(gate_neutral="own:32"), progress=False)
    import json

    rows = (shared_data / "piqa" / "validation_merged.jsonl").read_text(encoding="utf-8").splitlines()[:40]
    how_to = [f"Question: {d['goal']}\nAnswer: {(d['sol1'], d['sol2'])[int(d['label'])]}" for d in map(json.loads, rows)]
    toxic = [t for t, label in zip(load_concept_data("rtp-learn").texts, load_concept_data("rtp-learn").labels)
             if label == 1][-40:]  # not among the 120 learned from (the balanced sample draws from all 398)

    def mean_gate(iv, texts):
        got = collect_responses(smol, texts, None, hook, pooling=f"positions:{TOKEN_POSITIONS}", progress=False)
        return float(iv.gate_rule.value(got.pooled[hook], iv.tensors[hook]).mean())

    assert mean_gate(token, how_to) < mean_gate(probe, how_to) - 0.1  # measured 0.18 against 0.40
    assert mean_gate(token, toxic) > mean_gate(token, how_to) + 0.1
    assert np.isfinite(token.metadata["gate"]["accuracy"][hook])
