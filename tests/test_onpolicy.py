"""On-policy concept data: continuations of the learn split's prompts, scored, labelled, cached (tiny model)."""

import pytest
import torch

from aura_tl.data import load_concept_data, read_jsonl, rtp_records
from aura_tl.onpolicy import build_onpolicy_data
from aura_tl.splits import select_split


class FixedScorer:
    """Scores by a word, so the labels are known without a real classifier."""

    def score(self, texts):
        return [0.9 if len(t) % 2 else 0.1 for t in texts]


def test_build_score_label_and_reuse(tiny, tmp_path, shared_data, monkeypatch):
    import aura_tl.onpolicy

    monkeypatch.setenv("AURA_TL_RTP", str(shared_data / "rtp"))
    learn = select_split(rtp_records(), "learn")[:6]
    monkeypatch.setattr(aura_tl.onpolicy, "prompt_records", lambda split: learn)
    monkeypatch.setattr(aura_tl.onpolicy, "get_scorer", lambda name=None: FixedScorer())
    path = build_onpolicy_data(tiny, tmp_path / "op.jsonl", samples=2, max_new_tokens=6, progress=False)
    rows = read_jsonl(path)
    assert 0 < len(rows) <= 12 and {r["prompt"] for r in rows} <= {r["prompt"]["text"].strip() for r in learn}
    assert all(r["label"] == int(len(r["text"]) % 2 == 1) for r in rows)  # label = score >= 0.5
    monkeypatch.setattr(aura_tl.onpolicy, "get_scorer", lambda name=None: pytest.fail("rebuilt instead of reused"))
    assert build_onpolicy_data(tiny, path, samples=2, max_new_tokens=6, progress=False) == path
    rebuilt = []  # the same name with one weight changed is another model: its continuations are built again
    monkeypatch.setattr(aura_tl.onpolicy, "get_scorer", lambda name=None: rebuilt.append(1) or FixedScorer())
    weight = tiny.blocks[1].attn.W_O  # as tests/test_cache.py changes one weight
    with torch.no_grad():
        weight[0, 0, 0] += 1.0
    try:
        build_onpolicy_data(tiny, path, samples=2, max_new_tokens=6, progress=False)
    finally:
        with torch.no_grad():
            weight[0, 0, 0] -= 1.0
    assert rebuilt == [1]
    if len({r["label"] for r in rows}) == 2:
        data = load_concept_data(str(path))
        assert data.layout == "text_label" and data.counts[0] == data.counts[1]


def test_matched_pairs_put_each_toxic_continuation_beside_a_clean_one_of_its_prompt():
    from aura_tl.onpolicy import matched_pairs

    rows = [{"prompt": "You are", "text": "an idiot", "label": 1}, {"prompt": "You are", "text": "kind", "label": 0},
            {"prompt": "You are", "text": "a moron", "label": 1}, {"prompt": "Rain", "text": "  ", "label": 0},
            {"prompt": "The sea", "text": "is calm", "label": 0}, {"prompt": "The sea", "text": "is blue", "label": 0}]
    pairs = matched_pairs(rows)
    assert [r["label"] for r in pairs] == [1, 0, 1, 0]
    assert (pairs[0]["text"], pairs[1]["text"], pairs[2]["text"]) == ("You are an idiot", "You are kind", "You are a moron")
    assert pairs[3]["text"] in ("The sea is calm", "The sea is blue")  # its prompt had one clean continuation
    with pytest.raises(ValueError, match="too few non-toxic"):
        matched_pairs(rows[:3])


class EveryThirdToxic:
    """Scores the 1st, 4th, 7th ... text toxic: both labels, more non-toxic than toxic."""

    def score(self, texts):
        return [0.9 if i % 3 == 0 else 0.1 for i in range(len(texts))]


def test_onpolicy_pairs_data_is_learned_from_the_models_cached_continuations(tiny, shared_data, monkeypatch, tmp_path):
    """`data=onpolicy-pairs:N`: the cached on-policy file, built once, as matched pairs; learning reads it with the
    model (and says so without one)."""
    import aura_tl.onpolicy
    from aura_tl.learn import concept_data_for, learn_intervention
    from aura_tl.methods import get_method
    from aura_tl.onpolicy import cached_onpolicy, matched_pairs, read_onpolicy

    monkeypatch.setenv("AURA_TL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("AURA_TL_RTP", str(shared_data / "rtp"))
    learn = select_split(rtp_records(), "learn")[:6]
    monkeypatch.setattr(aura_tl.onpolicy, "prompt_records", lambda split: learn)
    monkeypatch.setattr(aura_tl.onpolicy, "get_scorer", lambda name=None: EveryThirdToxic())
    options = get_method("linact").options(data="onpolicy-pairs:2", pooling="mean_last:4", hooks="hook_attn_out",
                                           gate="probe", max_ppl_increase="none")  # the data is tested, not the gate
    with pytest.raises(ValueError, match="pass the model"):
        concept_data_for(options)
    data = concept_data_for(options, model=tiny, progress=False)
    expected = matched_pairs(read_onpolicy(cached_onpolicy(tiny, 2, progress=False)))
    assert sorted(zip(data.texts, data.labels)) == sorted((r["text"], r["label"]) for r in expected)
    assert data.counts[1] == data.counts[0] > 0 and data.source == "onpolicy-pairs:2"
    prompts = {r["prompt"]["text"].strip() for r in learn}
    assert all(any(text.startswith(p) for p in prompts) for text in data.texts)  # prompt + continuation, both sides
    monkeypatch.setattr(aura_tl.onpolicy, "get_scorer", lambda name=None: pytest.fail("rebuilt instead of reused"))
    iv = learn_intervention(tiny, None, "linact", options, progress=False)
    assert iv.metadata["data"]["source"] == "onpolicy-pairs:2"
