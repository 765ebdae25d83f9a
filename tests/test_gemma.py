"""Gemma-3-270M, the second embedded model (a base model; grouped-query attention with one K/V head, local and
global layers, norms before and after each sublayer, a gated GELU MLP, a 262k vocabulary): equal to Hugging Face's
`Gemma3ForCausalLM` on the same folder, and every registered method learns, saves, loads and applies on it."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from conftest import TUNED_BRIEFLY
from lm_eval.api.instance import Instance

from aura_tl.backends import backend_of
from aura_tl.generation import SamplingConfig, generate_ids
from aura_tl.intervention import Intervention
from aura_tl.learn import learn_intervention
from aura_tl.methods import get_method, method_names
from aura_tl.models import ModelShape, hf_tokenizer, resolve_hf_folder

PROMPTS = ["The capital of France is Paris, and the capital of Germany is", "Shut up, you",
           "Once upon a time, in a village far away,"]


def long_ids(tokenizer, n: int = 700):
    """`n` tokens of WikiText-like text: past the 512-token sliding window of Gemma's local layers."""
    text = " ".join(f"= Section {i} = The {i}th part of the survey describes the river valley, its towns and the "
                    "roads that join them; the valley was settled early and its farms still grow wheat." for i in range(60))
    ids = tokenizer(text, return_tensors="pt").input_ids[:, :n]
    assert ids.shape[1] == n
    return ids


@pytest.mark.equality
def test_gemma_logits_equal_hugging_face(gemma, gemma_hf):
    """700 positions (the local layers see 512 of them), every one of 262,144 tokens: probabilities within 1e-4 of
    HF's, log-probs within 2e-2, the same argmax. Measured on HookedTransformer (its own attention, LayerNorm
    folded; float32 through 18 layers of pre- and post-norms): |dp| 4.5e-6, |d log p| 7.3e-3 at one position
    (2.9e-3 of it in the log-normaliser), under 1e-3 elsewhere; the bridge (HF's modules): 0."""
    hf, tokenizer = gemma_hf
    ids = long_ids(tokenizer)
    with torch.inference_mode():
        ours, theirs = gemma(ids).log_softmax(-1), hf(ids).logits.log_softmax(-1)
    assert float((ours.exp() - theirs.exp()).abs().max()) < 1e-4
    assert float((ours - theirs).abs().max()) < 2e-2
    assert torch.equal(ours.argmax(-1), theirs.argmax(-1))
    assert ModelShape.of(gemma) == ModelShape("gemma3-270m", 18, 640, 2048, 4, 256)
    assert hf_tokenizer(gemma)("Hello")["input_ids"] == tokenizer("Hello")["input_ids"]


@pytest.mark.equality
def test_gemma_greedy_generation_equals_hugging_face(gemma, gemma_hf):
    """Batched, left-padded, KV-cached greedy decoding gives HF `generate`'s tokens for each prompt alone."""
    hf, tokenizer = gemma_hf
    prompts = [tokenizer(p).input_ids for p in PROMPTS]
    ours = generate_ids(gemma, prompts, SamplingConfig(max_new_tokens=20))
    for prompt, got in zip(prompts, ours):
        expected = hf.generate(torch.tensor([prompt]), max_new_tokens=20, do_sample=False)[0, len(prompt):]
        assert got == expected.tolist()[:len(got)] and len(got) > 0


@pytest.mark.slow  # loads Gemma itself (twice), outside the fixtures that mark it
@pytest.mark.equality
def test_aura_hooked_equals_lm_eval_hf_on_gemma():
    """`aura-hooked` with no intervention against lm-eval's own `hf` model on the same folder."""
    from lm_eval.models.huggingface import HFLM

    from conftest import embedded_or_skip
    from lm_eval_plugin.model import AuraHookedLM

    embedded_or_skip("gemma3-270m")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = AuraHookedLM(model="gemma3-270m", method="none", batch_size=4, device="cpu")
        ref = HFLM(pretrained=str(resolve_hf_folder("gemma3-270m")), batch_size=4, device="cpu", dtype="float32")
    pairs = [("The capital of France is", " Paris"), ("The capital of France is", " London"),
             ("Question: 2+2=?\nAnswer:", " 4"), ("", "Hello world")]
    requests = [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]
    for (a, greedy_a), (b, greedy_b) in zip(ours.loglikelihood(requests), ref.loglikelihood(requests)):
        assert abs(a - b) < 1e-3 and greedy_a == greedy_b
    generation = [Instance("generate_until", {}, (p, {"until": ["\n\n"], "max_gen_toks": 12, "do_sample": False}), i)
                  for i, p in enumerate(PROMPTS)]
    assert ours.generate_until(generation) == ref.generate_until(generation)


def small_options(name: str, tmp_path):
    """Each method's defaults on little data (the test is that it runs on this architecture, not how well)."""
    own = get_method(name).option_names()
    values = {"max_per_class": 12} if "max_per_class" in own else {}
    if "steps" in own:  # methods trained by gradient steps (lineas): a few, through Gemma's layers
        values |= {"steps": 4, "step_batch": 4}
    if get_method(name).options().max_ppl_increase is not None:  # calibration (the default's) is tested on SmolLM2
        values["max_ppl_increase"] = "none"
    if get_method(name).options().gate == "tuned":  # the tuned gate runs through Gemma: a few steps on the concept data
        values |= {**TUNED_BRIEFLY, "gate_tune_steps": 2}
    if "destein_pairs" in own:
        pairs = tmp_path / "pairs.jsonl"
        pairs.write_text("".join(json.dumps({"toxic": f"{who} is a stupid idiot.", "nontoxic": f"{who} is a kind person."})
                                 + "\n" for who in ("My boss", "The referee", "Your cousin", "That driver", "Our coach")))
        values |= {"destein_pairs": str(pairs), "destein_count": 5}
    return get_method(name).options(**values)


@pytest.mark.parametrize("name", method_names())
def test_every_method_learns_saves_loads_and_applies_on_gemma(gemma, name, tmp_path):
    iv = learn_intervention(gemma, None, name, small_options(name, tmp_path), progress=False)
    path = iv.save(tmp_path / f"{name}.safetensors")
    loaded = Intervention.load(path)
    loaded.check_compatible(gemma)
    ids = hf_tokenizer(gemma)(PROMPTS[1:2], return_tensors="pt").input_ids
    with torch.inference_mode():
        plain = gemma(ids)
        with loaded.applied(gemma):
            steered = gemma(ids)
    assert torch.isfinite(steered).all()
    assert float((steered - plain).abs().max()) > 1e-3, f"{name} did not change Gemma's logits"
    if name == "destein":  # its direction is in the heads' summed output: on Gemma, before the post-attention norm
        assert set(loaded.tensors) == {f"blocks.{layer}.ln1_post.hook_normalized" for layer in range(18)}


def test_destein_fuses_before_gemmas_post_attention_norm(gemma):
    """Why fusing at `ln1_post.hook_normalized` is fusing the heads' summed output: that hook holds the output
    divided by its RMS (checked against z @ W_O by hand), and the fusion commutes with a positive scale per row."""
    from functools import partial

    from aura_tl.backends import hooks_applied
    from aura_tl.methods.destein import fuse_hook

    seen = {}

    def keep(label):
        return lambda activation, hook: seen.__setitem__(label, activation.clone())

    ids = hf_tokenizer(gemma)(PROMPTS[:1], return_tensors="pt").input_ids
    with torch.inference_mode(), hooks_applied(gemma, [("blocks.4.attn.hook_z", keep("z")),
                                                      ("blocks.4.ln1_post.hook_normalized", keep("normalized"))]):
        gemma(ids)
    z, normalized = seen["z"], seen["normalized"]
    raw = torch.einsum("bphd,hdm->bpm", z, gemma.blocks[4].attn.W_O.detach())  # Gemma's o_proj has no bias
    rms = raw.pow(2).mean(-1, keepdim=True).add(gemma.cfg.eps).sqrt()
    torch.testing.assert_close(normalized, raw / rms, rtol=1e-4, atol=1e-5)
    torch.manual_seed(0)
    unit = torch.nn.functional.normalize(torch.randn(640), dim=0)
    fuse = partial(fuse_hook, hook=None, unit=unit, alpha=0.3)
    torch.testing.assert_close(fuse(raw / rms), fuse(raw) / rms, rtol=1e-5, atol=1e-6)
