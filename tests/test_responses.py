import logging

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from aura_tl.auroc import auroc
from aura_tl.models import hf_tokenizer, pad_token_id
from aura_tl.responses import Responses, collect_responses

TEXTS = ["Hello there, how are you?", "No", "A much longer sentence that needs padding in a batch of others.",
         "You idiot.", "Thanks a lot for the help yesterday!"]


def manual_pool(model, text, how):
    ids = hf_tokenizer(model)(text)["input_ids"]
    _, cache = model.run_with_cache(torch.tensor([ids]), names_filter="blocks.1.mlp.hook_post")
    act = cache["blocks.1.mlp.hook_post"][0]
    return {"max": act.max(0).values, "mean": act.mean(0), "last": act[-1]}[how]


@pytest.mark.parametrize("how", ["max", "mean", "last"])
def test_pooling_ignores_padding(tiny, how):
    out = collect_responses(tiny, TEXTS, [0, 1, 0, 1, 0], "blocks.1.mlp.hook_post", pooling=how, batch_size=3,
                            progress=False)
    pooled = out.pooled["blocks.1.mlp.hook_post"]
    assert pooled.shape == (5, 48)
    for row, text in enumerate(TEXTS):
        torch.testing.assert_close(pooled[row], manual_pool(tiny, text, how), rtol=1e-5, atol=1e-5)


def test_batch_size_does_not_change_results_and_heads_flatten(tiny):
    a = collect_responses(tiny, TEXTS, None, "hook_z", batch_size=1, progress=False)
    b = collect_responses(tiny, TEXTS, None, "hook_z", batch_size=5, progress=False)
    assert a.pooled["blocks.0.attn.hook_z"].shape == (5, 32)
    for name in a.pooled:
        torch.testing.assert_close(a.pooled[name], b.pooled[name], rtol=1e-5, atol=1e-5)


def test_truncation_is_reported(tiny, caplog):
    with caplog.at_level(logging.WARNING):
        out = collect_responses(tiny, ["word " * 200, "short"], None, progress=False)
    assert out.metadata["truncated"] == 1 and "truncated" in caplog.text


def test_nan_activations_and_empty_input_are_errors(tiny):
    tiny.add_hook("blocks.0.mlp.hook_post", lambda act, hook: act * float("nan"))
    try:
        with pytest.raises(ValueError, match="NaN"):
            collect_responses(tiny, TEXTS, None, "blocks.0.mlp.hook_post", progress=False)
    finally:
        tiny.reset_hooks()
    with pytest.raises(ValueError, match="no texts"):
        collect_responses(tiny, [], None, progress=False)
    with pytest.raises(ValueError, match="no content tokens"):
        collect_responses(tiny, ["", "hi"], None, progress=False)


def test_save_and_load(tiny, tmp_path):
    out = collect_responses(tiny, TEXTS, [0, 1, 0, 1, 0], progress=False, save_to=tmp_path / "r.safetensors")
    back = Responses.load(tmp_path / "r.safetensors")
    assert back.labels.tolist() == [0, 1, 0, 1, 0] and back.metadata["pooling"] == "max"
    for name in out.pooled:
        torch.testing.assert_close(back.pooled[name], out.pooled[name])


def test_real_responses_auroc_matches_sklearn(smol):
    from aura_tl.data import load_concept_data

    data = load_concept_data("embedded", max_per_class=20)
    out = collect_responses(smol, data.texts, data.labels, "blocks.10.mlp.hook_post", progress=False)
    pooled = out.pooled["blocks.10.mlp.hook_post"]
    ours = auroc(pooled, out.labels).numpy()
    ref = np.array([roc_auc_score(out.labels.numpy(), pooled[:, j].numpy()) for j in range(0, 1536, 7)])
    np.testing.assert_allclose(ours[::7], ref, atol=1e-6)
    assert ours.max() > 0.9  # toxicity experts exist in SmolLM2


def test_length_batches_bound_rows_and_tokens():
    from aura_tl.responses import length_batches

    lengths = [1, 2, 3, 4, 5, 100, 2000]
    batches = length_batches(lengths, batch_size=3, max_tokens=250)
    assert batches == [(0, 3), (3, 5), (5, 6), (6, 7)]  # a long text alone, even over the budget
    assert [i for a, b in batches for i in range(a, b)] == list(range(7))


@pytest.mark.parametrize("how", ["max", "mean", "last", "mean_last:3"])
def test_span_pooling_equals_masked_pooling(how):
    from aura_tl.responses import content_spans, pool, pool_spans

    content = [[False, True, True, False], [False, True, True, False], [True, True, True, True], [True, False, False, False]]
    mask = torch.tensor(content)
    activation = torch.randn(4, 4, 6)
    spans = content_spans(content)
    assert spans == [(0, 2, 1, 3), (2, 3, 0, 4), (3, 4, 0, 1)]
    torch.testing.assert_close(pool_spans(activation, spans, how), pool(activation, mask, how))
    assert content_spans([[True, False, True]]) is None  # non-contiguous content: masked pooling is used


def test_responses_from_a_transformerlens_cache_equal_collect_responses(tiny):
    from aura_tl.responses import make_batch, responses_from_cache, tokenize

    texts = ["you absolute idiot", "a calm and lovely afternoon by the sea", "shut up", "thanks a lot, friend!"]
    ids, content, _ = tokenize(tiny, texts)
    batch = make_batch(ids, content, pad_token_id(hf_tokenizer(tiny)), "cpu")  # right-padded, as a user would
    _, cache = tiny.run_with_cache(batch.tokens, attention_mask=batch.attention_mask)
    for pooling in ("max", "mean", "last"):
        ours = responses_from_cache(cache, [1, 0, 1, 0], "hook_post", pooling=pooling,
                                    attention_mask=batch.attention_mask, tokens=batch.tokens)
        reference = collect_responses(tiny, texts, [1, 0, 1, 0], "hook_post", pooling=pooling, progress=False)
        assert list(ours.pooled) == list(reference.pooled)
        for name in reference.pooled:
            torch.testing.assert_close(ours.pooled[name], reference.pooled[name], rtol=1e-5, atol=1e-6)
    plain = {k: v for k, v in cache.items()}  # a plain dict of tensors works too
    assert responses_from_cache(plain, None, "blocks.0.attn.hook_z", attention_mask=batch.attention_mask
                                ).pooled["blocks.0.attn.hook_z"].shape == (4, 32)
    assert list(responses_from_cache(plain, None, "blocks.{1/2:}.attn.hook_z").pooled) == ["blocks.1.attn.hook_z"]
    with pytest.raises(ValueError, match="no activation in the cache"):
        responses_from_cache(cache, None, "blocks.*.hook_nothing")


@pytest.mark.parametrize("method, options", [("aura", {}), ("det0", {"num_experts": 20}), ("damp", {"num_experts": 20}),
                                             ("linact", {"causal": False, "gate": False}), ("meanact", {"causal": False}),
                                             ("linact", {"causal": False, "gate": "probe"})])
def test_interventions_from_a_cache_equal_learning_on_the_same_texts(tiny, method, options):
    """The researcher's path (run_with_cache -> responses_from_cache -> intervention_from_responses) gives the
    tensors that `learn_intervention` computes by running the model itself."""
    from aura_tl import intervention_from_responses, learn_intervention
    from aura_tl.data import ConceptData
    from aura_tl.responses import make_batch, responses_from_cache, tokenize

    texts = ["you absolute idiot", "a calm and lovely afternoon by the sea", "shut up, loser", "thanks a lot, friend!",
             "what a stupid thing to say", "the garden looks great today"]
    labels = [1, 0, 1, 0, 1, 0]
    ids, content, _ = tokenize(tiny, texts)
    batch = make_batch(ids, content, pad_token_id(hf_tokenizer(tiny)), "cpu")
    _, cache = tiny.run_with_cache(batch.tokens, attention_mask=batch.attention_mask)
    pooling = "max" if method in ("aura", "det0", "damp") else "mean"
    hooks = "hook_post" if pooling == "max" else "hook_attn_out"
    responses = responses_from_cache(cache, labels, hooks, pooling=pooling, attention_mask=batch.attention_mask,
                                     tokens=batch.tokens)
    ours = intervention_from_responses(tiny, responses, method, hooks=hooks, pooling=pooling,
                                       **{k: v for k, v in options.items() if k != "causal"})
    reference = learn_intervention(tiny, ConceptData(texts, labels, "t", "text_label"), method, hooks=hooks,
                                   pooling=pooling, progress=False, **options)
    assert ours.hook_names == reference.hook_names and ours.gated == reference.gated
    for i, hook in enumerate(reference.tensors):
        for name, tensor in reference.tensors[hook].items():
            if name.startswith("gate") and i > 0:  # gates: learn_intervention fits them causally, a cache cannot
                continue
            torch.testing.assert_close(ours.tensors[hook][name], tensor, rtol=1e-4, atol=1e-5)


def test_from_responses_refuses_causal_and_one_label(tiny):
    from aura_tl import intervention_from_responses
    from aura_tl.responses import Responses

    responses = Responses({"blocks.0.hook_attn_out": torch.randn(4, 32)}, torch.tensor([1, 0, 1, 0]))
    with pytest.raises(ValueError, match="causal estimation"):
        intervention_from_responses(tiny, responses, "linact", causal=True)
    with pytest.raises(ValueError, match="both labels"):
        intervention_from_responses(tiny, Responses(responses.pooled, torch.tensor([1, 1, 1, 1])), "linact")
    with pytest.raises(ValueError, match="not learned from pooled responses"):
        intervention_from_responses(tiny, responses, "destein")
