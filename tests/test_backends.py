"""The backend seam (`aura_tl.backends`): every backend against Hugging Face and hand computations, and the two
backends against each other where one TransformerLens has both (3.9).

Run on the backend under test (`$AURA_TL_BACKEND`, else the default); the cross-backend tests need both and skip on
TransformerLens 4, whose only model class is the bridge. Tests marked `equality` run in the TransformerLens 4 CI leg
beside the fast suite, also when they load the real model.
"""

from __future__ import annotations

from functools import partial

import pytest
import torch
from conftest import PROBE_GATED, TUNED_BRIEFLY, save_tiny_llama

from aura_tl.backends import BACKENDS, backend_of, check_backend, hooked_transformer_available
from aura_tl.data import ConceptData, load_concept_data
from aura_tl.generation import SamplingConfig, generate
from aura_tl.hooks import resolve_hook_names
from aura_tl.intervention import Intervention
from aura_tl.learn import learn_intervention
from aura_tl.models import hf_tokenizer, load_hf, load_model

both = pytest.mark.skipif(not hooked_transformer_available(), reason="this TransformerLens has no HookedTransformer")
TEXTS = ["The capital of Germany is", "Shut up, you absolute", "Once upon a time, in a village far away,"]
# every hook kind an intervention may sit on, as users spell them
HOOK_KINDS = ["blocks.*.hook_resid_pre", "blocks.*.hook_attn_out", "blocks.*.attn.hook_z", "blocks.*.hook_mlp_out",
              "blocks.*.mlp.hook_pre", "blocks.*.mlp.hook_pre_linear", "blocks.*.mlp.hook_post",
              "blocks.*.hook_resid_mid", "blocks.*.hook_resid_post"]


def concept() -> ConceptData:
    return load_concept_data("embedded", max_per_class=12, seed=0)


def tokens_of(model, texts=TEXTS):
    """Right-padded token ids and mask, as the HF tokenizer gives them."""
    tokenizer = hf_tokenizer(model)
    tokenizer.padding_side = "right"
    encoded = tokenizer(list(texts), return_tensors="pt", padding=True)
    return encoded.input_ids, encoded.attention_mask


# --- any backend ---------------------------------------------------------------------------------------------------
def test_hook_names_are_spelt_one_way(tiny):
    names = resolve_hook_names(tiny, "hook_post")
    assert names == ["blocks.0.mlp.hook_post", "blocks.1.mlp.hook_post"]
    # TransformerLens 4's canonical spellings are accepted and come back as the names files and users use
    assert resolve_hook_names(tiny, "blocks.*.mlp.out.hook_in") == names
    assert resolve_hook_names(tiny, "blocks.1.attn.hook_out, blocks.0.hook_in") == ["blocks.0.hook_resid_pre",
                                                                                    "blocks.1.hook_attn_out"]
    listed = backend_of(tiny).hook_names(tiny)
    assert "blocks.0.mlp.hook_post" in listed and "blocks.0.mlp.out.hook_in" not in listed
    with pytest.raises(ValueError, match="did you mean 'blocks.\\*.mlp.hook_post'"):
        resolve_hook_names(tiny, "blocks.*.mlp.hook_psot")


def test_hooks_applied_adds_and_removes_exactly_its_hooks_and_keeps_transformerlens_refusals(tiny):
    from aura_tl.backends import hook_point, hooks_applied

    seen = []
    point = hook_point(tiny, "blocks.0.mlp.hook_post")
    with tiny.hooks(fwd_hooks=[("blocks.0.mlp.hook_post", lambda a, hook: seen.append("theirs"))]):
        with hooks_applied(tiny, [("blocks.0.mlp.out.hook_in", lambda a, hook: seen.append("ours"))]):
            tiny(torch.tensor([[1, 2, 3]]))
        assert len(point.fwd_hooks) == 1  # ours gone, the user's own still there
    assert seen == ["theirs", "ours"] and not point.fwd_hooks
    with pytest.raises(ValueError, match="use_attn_result"):  # a hook that would never fire is refused, as TL does
        with hooks_applied(tiny, [("blocks.0.attn.hook_result", lambda a, hook: None)]):
            pass


def test_unknown_backend_is_refused_before_any_weight(tiny_dir):
    with pytest.raises(ValueError, match="unknown backend 'tl5'; choose from hooked, bridge"):
        load_model(str(tiny_dir), backend="tl5")
    if not hooked_transformer_available():
        with pytest.raises(ValueError, match="no longer has"):
            check_backend("hooked")


def test_block_by_block_runs_equal_a_full_pass(tiny):
    """The causal estimator's runner: the residual carried to block 1 and the activations block 1 computes from it
    equal one full forward's."""
    tokens, mask = tokens_of(tiny)
    full = {}

    def keep(activation, hook, name):
        full[name] = activation.clone()

    names = ["blocks.1.hook_resid_pre", "blocks.1.mlp.hook_post"]
    with torch.inference_mode():
        tiny.run_with_hooks(tokens, attention_mask=mask, fwd_hooks=[(n, partial(keep, name=n)) for n in names])
        runner = backend_of(tiny).layer_runner(tiny, tokens, mask, last_layer=1)
        runner.carry_to(0)
        runner.carry_to(1)
        seen = {}
        with tiny.hooks(fwd_hooks=[("blocks.1.mlp.hook_post", lambda a, hook: seen.setdefault("post", a.clone()))]):
            runner.run(1)
    rows = mask.bool()
    torch.testing.assert_close(runner.residual[rows], full["blocks.1.hook_resid_pre"][rows], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(seen["post"][rows], full["blocks.1.mlp.hook_post"][rows], rtol=1e-5, atol=1e-5)


def test_running_through_a_block_fires_its_hooks_and_never_unembeds_every_position(tiny):
    """What response collection and lineas run: the hooks up to the last block see what a full forward gives them,
    and the unembedding (the bulk of a Gemma-3 forward) reads at most one position, where a full forward reads all."""
    tokens, mask = tokens_of(tiny)
    names = ["blocks.0.hook_attn_out", "blocks.1.mlp.hook_post"]
    seen, full, unembedded = {}, {}, []

    def keep(activation, hook, into):
        into[hook.name] = activation.clone()

    handle = tiny.unembed.register_forward_hook(lambda module, args, output: unembedded.append(output.shape[-2]))
    try:
        with torch.inference_mode():
            with tiny.hooks(fwd_hooks=[(n, partial(keep, into=full)) for n in names]):
                tiny(tokens, attention_mask=mask)
            assert unembedded == [tokens.shape[1]]  # a full forward unembeds every position
            unembedded.clear()
            with tiny.hooks(fwd_hooks=[(n, partial(keep, into=seen)) for n in names]):
                backend_of(tiny).run_through(tiny, tokens, mask, last_layer=1)
    finally:
        handle.remove()
    assert all(positions <= 1 for positions in unembedded)
    rows = mask.bool()
    assert seen.keys() == full.keys() and len(seen) == 2
    for name in full:
        torch.testing.assert_close(seen[name][rows], full[name][rows], rtol=1e-5, atol=1e-5)


def test_final_norm_and_unembedding_give_the_logits(tiny):
    tokens, _ = tokens_of(tiny, TEXTS[:1])
    backend = backend_of(tiny)
    with torch.inference_mode():
        logits = tiny(tokens)
        normalized = backend.final_normalized(tiny, tokens)
        picked = backend.unembed(tiny, normalized[0, 2:5])
    torch.testing.assert_close(picked, logits[0, 2:5], rtol=1e-5, atol=1e-4)


def test_cached_greedy_generation_equals_hugging_face(tiny_dir):
    """Left-padded batch through the backend's KV cache: the same tokens as HF `generate` on the folder."""
    model = load_model(str(tiny_dir), device="cpu")
    hf, tokenizer = load_hf(str(tiny_dir))
    ours = generate(model, TEXTS, SamplingConfig(max_new_tokens=10), batch_size=3, stop_at_eos=False)
    tokenizer.padding_side = "left"
    encoded = tokenizer(TEXTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = hf.generate(**encoded, max_new_tokens=10, min_new_tokens=10, do_sample=False,
                          pad_token_id=tokenizer.pad_token_id)
    assert ours == [tokenizer.decode(row[encoded.input_ids.shape[1]:], skip_special_tokens=True) for row in out]


def test_a_kv_cache_that_does_not_fill_is_an_error(tiny_dir, monkeypatch):
    """transformers 5.24's failure, reproduced: the bridge's forward never hands HF the cache, so a cached step sees
    no past. Generation must refuse, naming the remedy, instead of repeating one token."""
    model = load_model(str(tiny_dir), device="cpu", backend="bridge")
    forward = model.forward
    monkeypatch.setattr(model, "forward", lambda *a, past_key_values=None, **k: forward(*a, **k))
    with pytest.raises(RuntimeError, match=r"KV cache gives wrong logits.*transformers==5\.23\.0"):
        generate(model, TEXTS[:1], SamplingConfig(max_new_tokens=3))


def test_the_installed_transformers_fills_the_bridge_cache(tiny_dir):
    """The check itself on this machine's transformers: if it fails here, the pin in pyproject.toml is wrong."""
    from aura_tl.backends import check_kv_cache

    check_kv_cache(load_model(str(tiny_dir), device="cpu", backend="bridge"))


def test_bridge_attention_is_hugging_faces_until_a_pattern_is_hooked(tiny_dir):
    """The bridge runs HF's (SDPA) attention module while no attention-internal hook is set: logits equal HF's;
    hooking `hook_pattern` switches that block to TransformerLens' own attention for the call, and the pattern it
    hands over is a causal, padding-aware softmax whose logits still equal HF's."""
    model = load_model(str(tiny_dir), device="cpu", backend="bridge")
    hf, tokenizer = load_hf(str(tiny_dir))
    tokens, mask = tokens_of(model)
    rows = mask.bool()
    with torch.no_grad():
        reference = hf(tokens, attention_mask=mask).logits
    calls = []
    spy = model.blocks[0].attn.original_component.register_forward_hook(lambda *args: calls.append(1))
    with torch.inference_mode():
        fast = model(tokens, attention_mask=mask)
        patterns = {}
        with model.hooks(fwd_hooks=[("blocks.0.attn.hook_pattern", lambda a, hook: patterns.setdefault(0, a.clone()))]):
            full = model(tokens, attention_mask=mask)
        _, cache = model.run_with_cache(tokens, attention_mask=mask, names_filter=lambda n: n.endswith("hook_pattern"))
    spy.remove()
    assert calls == [1]  # HF's module ran in the fast pass only: a hooked pattern (or a cache of patterns) is TL's
    torch.testing.assert_close(fast[rows], reference[rows], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(full[rows], reference[rows], rtol=1e-5, atol=1e-5)
    pattern = patterns[0]  # [batch, head, query, key]
    assert torch.allclose(pattern.sum(-1)[rows[:, None, :].expand_as(pattern[..., 0])], torch.tensor(1.0))
    assert float(pattern.triu(1).abs().max()) == 0.0  # causal
    assert "blocks.1.attn.hook_pattern" in cache


def hf_with_edit(hf, iv: Intervention, input_ids) -> torch.Tensor:
    """Logits of the plain HF model with the intervention's edit written by hand as torch hooks on HF's modules:
    `hook_attn_out` is what `self_attn` returns, `mlp.hook_post` what enters `mlp.down_proj`."""
    handles = []
    for name, tensors in iv.tensors.items():
        layer = hf.model.layers[int(name.split(".")[1])]
        if iv.method == "linact":
            t, lam = tensors, iv.strength

            def edit(a, t=t, lam=lam):
                inside = (a >= t["lo"]) & (a <= t["hi"])
                moved = torch.where(inside, a + lam * ((t["omega"] - 1) * a + t["beta"]), a)
                if "gate_w" in t:
                    gate = torch.sigmoid(a @ t["gate_w"] + t["gate_b"])[..., None]
                    moved = a + gate * (moved - a)
                return moved

            handles.append(layer.self_attn.register_forward_hook(
                lambda module, args, out, edit=edit: (edit(out[0]), *out[1:])))
        elif iv.method == "aura":
            alpha = 1 - iv.strength * (1 - tensors["alpha"])
            handles.append(layer.mlp.down_proj.register_forward_pre_hook(
                lambda module, args, alpha=alpha: (args[0] * alpha,)))
        else:
            raise AssertionError(iv.method)
    try:
        with torch.no_grad():
            return hf(input_ids).logits
    finally:
        for handle in handles:
            handle.remove()


@pytest.mark.parametrize("method, options", [
    ("linact", {"gate": "false", "strength": 1.0}),
    # the default's form: the tuned gate on the later third of the blocks, calibrated to +2 % (its texts cut short:
    # tuned briefly on the concept data, the budget on the calibration text's kinds)
    ("linact", {**TUNED_BRIEFLY, "calibration_panel": "text"}),
    ("aura", {"hooks": "hook_post"}),
])
def test_steered_logits_equal_hugging_face_with_the_edit_by_hand(tiny_dir, method, options):
    """Learned on the backend under test; applied by it; the same edit on the plain HF model, written by hand."""
    model = load_model(str(tiny_dir), device="cpu")
    hf, tokenizer = load_hf(str(tiny_dir))
    iv = learn_intervention(model, concept(), method, progress=False, **options)
    ids = tokenizer(TEXTS[1], return_tensors="pt").input_ids
    with torch.inference_mode(), iv.applied(model):
        steered = model(ids)
    expected = hf_with_edit(hf, iv, ids)
    torch.testing.assert_close(steered, expected, rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        assert not torch.allclose(expected, hf(ids).logits, atol=1e-3)  # the edit changes something: the check can fail


# --- both backends (TransformerLens 3.9) ---------------------------------------------------------------------------
def activations(model, hooks: list[str], tokens, mask) -> dict[str, torch.Tensor]:
    """Each hook's activation (heads flattened), keyed by the user's spelling."""
    names = resolve_hook_names(model, hooks)
    seen = {}

    def keep(activation, hook, name):
        seen[name] = activation.flatten(2) if activation.ndim == 4 else activation.clone()

    with torch.inference_mode():
        logits = model.run_with_hooks(tokens, attention_mask=mask, fwd_hooks=[(n, partial(keep, name=n)) for n in names])
    seen["logits"] = logits
    return seen


def largest_gaps(a: dict, b: dict, mask) -> dict[str, float]:
    """Per hook kind (`blocks.*.<kind>`), the largest absolute difference over real (unpadded) positions, relative
    to the largest absolute value there (the residual stream of a real model reaches the thousands)."""
    rows, gaps = mask.bool(), {}
    for name in a:
        kind = name.split(".", 2)[-1] if name.startswith("blocks.") else name
        gap = (a[name][rows] - b[name][rows]).abs().max() / a[name][rows].abs().max().clamp(min=1e-12)
        gaps[kind] = max(gaps.get(kind, 0.0), float(gap))
    return gaps


def pair_on(folder):
    return load_model(str(folder), device="cpu", backend="hooked"), load_model(str(folder), device="cpu",
                                                                              backend="bridge")


@both
def test_both_backends_give_the_same_activations_and_logits(tiny_dir):
    hooked, bridge = pair_on(tiny_dir)
    tokens, mask = tokens_of(hooked)
    gaps = largest_gaps(activations(hooked, HOOK_KINDS, tokens, mask), activations(bridge, HOOK_KINDS, tokens, mask),
                        mask)
    assert set(gaps) == {h.split(".", 2)[-1] for h in HOOK_KINDS} | {"logits"}
    assert max(gaps.values()) < 1e-5, gaps


@both
@pytest.mark.parametrize("learn_on", BACKENDS)
def test_an_intervention_file_crosses_backends(tiny_dir, tmp_path, learn_on):
    """Learned (gated Linear-AcT) on one backend, saved, loaded on the other: the same logits."""
    models = dict(zip(BACKENDS, pair_on(tiny_dir)))
    other = next(b for b in BACKENDS if b != learn_on)
    iv = learn_intervention(models[learn_on], concept(), "linact", **PROBE_GATED, progress=False)
    path = iv.save(tmp_path / "iv.safetensors")
    tokens, mask = tokens_of(models[learn_on])
    with torch.inference_mode():
        logits = {}
        for name, model in models.items():
            with Intervention.load(path).applied(model):
                logits[name] = model(tokens, attention_mask=mask)
    rows = mask.bool()
    torch.testing.assert_close(logits[other][rows], logits[learn_on][rows], rtol=1e-4, atol=1e-4)
    relearned = learn_intervention(models[other], concept(), "linact", **PROBE_GATED, progress=False)
    for hook, named in iv.tensors.items():  # the causal estimate itself agrees across backends
        torch.testing.assert_close(relearned.tensors[hook]["omega"], named["omega"], rtol=1e-3, atol=1e-4)


@both
def test_both_backends_generate_the_same_steered_text(tiny_dir):
    hooked, bridge = pair_on(tiny_dir)
    iv = learn_intervention(hooked, concept(), "linact", **PROBE_GATED, progress=False)
    config = SamplingConfig(max_new_tokens=12, do_sample=True, top_p=0.9, seed=3)
    texts = {}
    for name, model in (("hooked", hooked), ("bridge", bridge)):
        with iv.applied(model):
            texts[name] = (generate(model, TEXTS, SamplingConfig(max_new_tokens=12)), generate(model, TEXTS, config))
    assert texts["hooked"][0] == texts["bridge"][0]  # greedy
    # sampled: the same draws from the same distributions (logits agree to ~1e-5, so the nucleus does too)
    assert texts["hooked"][1] == texts["bridge"][1]


@both
@pytest.mark.equality
def test_smollm2_on_both_backends(smol_pair):
    """The real model: activations at every hook kind, logits and greedy text agree between the backends."""
    hooked, bridge = smol_pair
    tokens, mask = tokens_of(hooked)
    gaps = largest_gaps(activations(hooked, HOOK_KINDS, tokens, mask), activations(bridge, HOOK_KINDS, tokens, mask),
                        mask)
    print("largest |hooked - bridge| / max |hooked| per hook kind:", {k: f"{v:.1e}" for k, v in gaps.items()})
    assert max(gaps.values()) < 1e-5, gaps
    config = SamplingConfig(max_new_tokens=20)
    assert generate(hooked, TEXTS, config) == generate(bridge, TEXTS, config)


@pytest.fixture(scope="module")
def smol_pair():
    return load_model("smollm2-135m", device="cpu", backend="hooked"), load_model("smollm2-135m", device="cpu",
                                                                                   backend="bridge")


def test_the_tiny_helper_builds_what_both_backends_load(tmp_path):
    folder = save_tiny_llama(tmp_path / "t", layers=1, n_ctx=16)
    model = load_model(str(folder), device="cpu")
    assert (model.cfg.n_layers, model.cfg.d_model, model.cfg.n_ctx, model.cfg.model_name) == (1, 32, 16, "t")
