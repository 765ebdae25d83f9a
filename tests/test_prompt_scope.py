"""`steer_prompt=False`: the edit acts from each prompt's last position on. Checked against plain forwards without a
KV cache that edit those positions by index (generation, step by step; lm-eval's loglikelihood per request), and
the choice survives the file, the lm-eval model args and a stack."""

from __future__ import annotations

import warnings

import pytest
import torch
from conftest import save_tiny_llama
from lm_eval.api.instance import Instance

from aura_tl.generation import SamplingConfig, generate_ids
from aura_tl.intervention import Intervention, InterventionStack, apply_values
from aura_tl.models import ModelShape, hf_tokenizer

HOOK = "blocks.{}.hook_attn_out"


def shift(model, size: float) -> Intervention:
    """Linear-AcT as a pure shift a + beta at every block's attention output (omega 1, no clipping in range)."""
    d, generator = model.cfg.d_model, torch.Generator().manual_seed(1)
    tensors = {HOOK.format(layer): {"omega": torch.ones(d), "beta": size * torch.randn(d, generator=generator),
                                    "lo": torch.full((d,), -1e9), "hi": torch.full((d,), 1e9)}
               for layer in range(model.cfg.n_layers)}
    return Intervention("linact", tensors, ModelShape.of(model), {}, 1.0)


def shifted_from(iv: Intervention, start: int):
    """Hooks adding each block's beta at positions >= start only: the reference, written by index."""
    def hook(activation, hook, beta):
        activation = activation.clone()
        activation[:, start:] += beta
        return activation
    return [(name, lambda a, hook, b=named["beta"]: hook_fn(a, hook, b)) for name, named in iv.tensors.items()
            for hook_fn in [hook]]


def greedy_by_hand(model, iv: Intervention, prompt: list[int], steps: int) -> list[int]:
    """Greedy tokens, each from a full forward of prompt + tokens so far with the edit from the prompt's last
    position on."""
    tokens = list(prompt)
    with torch.inference_mode(), model.hooks(fwd_hooks=shifted_from(iv, len(prompt) - 1)):
        for _ in range(steps):
            tokens.append(int(model(torch.tensor([tokens]))[0, -1].argmax()))
    return tokens[len(prompt):]


def test_generation_leaves_the_prompt_unsteered(tiny):
    """Left-padded batch, KV cache: equal to the step-by-step reference; steering the prompt too differs."""
    tok = hf_tokenizer(tiny)
    prompts = [tok("Shut up, you stupid")["input_ids"], tok("The people who live next door")["input_ids"][:3]]
    iv = shift(tiny, size=0.2)  # large enough to change both rows, small enough not to repeat one token
    config = SamplingConfig(max_new_tokens=6, do_sample=False)
    with iv.with_steer_prompt(False).applied(tiny):
        scoped = generate_ids(tiny, prompts, config)
    with iv.applied(tiny):
        everywhere = generate_ids(tiny, prompts, config)
    assert scoped == [greedy_by_hand(tiny, iv, p, 6) for p in prompts]
    assert scoped != everywhere
    with torch.inference_mode(), tiny.hooks(fwd_hooks=shifted_from(iv, 0)):  # the prompt steered: from position 0
        first = [int(tiny(torch.tensor([p]))[0, -1].argmax()) for p in prompts]
    assert [row[0] for row in everywhere] == first


def test_loglikelihood_leaves_each_context_unsteered(tmp_path):
    """lm-eval's loglikelihood with steer_prompt=false equals a forward that edits from the context's last
    position on (per request, contexts of different lengths in one batch), and differs from steering it all."""
    from lm_eval_plugin.model import AuraHookedLM

    folder = save_tiny_llama(tmp_path / "tiny")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = AuraHookedLM(model=str(folder), method="none", device="cpu", batch_size=4)
    iv = shift(plain.model, size=0.5)
    iv.save(tmp_path / "shift.safetensors")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scoped = AuraHookedLM(model=str(folder), intervention=str(tmp_path / "shift.safetensors"),
                              steer_prompt="false", device="cpu", batch_size=4)
        everywhere = AuraHookedLM(model=str(folder), intervention=str(tmp_path / "shift.safetensors"), device="cpu",
                                  batch_size=4)
    pairs = [("You are a stupid", " idiot and a fool"), ("Hello there, my", " world"), ("The cat sat on the", " mat")]
    requests = [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]

    def by_hand(start_at_context: bool) -> list[float]:
        sums = []
        for context, continuation in pairs:
            ctx, cont = plain._encode_pair(context, continuation)
            tokens = torch.tensor([ctx + cont[:-1]])
            start = len(ctx) - 1 if start_at_context else 0
            with torch.inference_mode(), plain.model.hooks(fwd_hooks=shifted_from(iv, start)):
                logprobs = torch.log_softmax(plain.model(tokens)[0, len(ctx) - 1:].float(), dim=-1)
            sums.append(float(logprobs.gather(1, torch.tensor(cont)[:, None]).sum()))
        return sums

    ours = [lp for lp, _ in scoped.loglikelihood(requests)]
    assert ours == pytest.approx(by_hand(True), abs=1e-4)
    assert [lp for lp, _ in everywhere.loglikelihood(requests)] == pytest.approx(by_hand(False), abs=1e-4)
    assert min(abs(a - b) for a, b in zip(ours, by_hand(False))) > 1e-3


def test_the_file_keeps_the_choice_and_only_then_needs_a_newer_reader(tiny, tmp_path, capsys):
    from safetensors import safe_open

    from aura_tl.cli import main

    iv = shift(tiny, size=0.2)
    iv.save(tmp_path / "all.safetensors")
    iv.with_steer_prompt(False).save(tmp_path / "new.safetensors")
    formats = {}
    for name in ("all", "new"):
        with safe_open(tmp_path / f"{name}.safetensors", "pt") as f:
            formats[name] = f.metadata()["format"]
    assert formats == {"all": "aura-tl/intervention/v2", "new": "aura-tl/intervention/v3"}
    assert Intervention.load(tmp_path / "all.safetensors").steer_prompt
    assert not Intervention.load(tmp_path / "new.safetensors").steer_prompt
    for name, said in (("new", True), ("all", False)):
        assert main(["inspect", str(tmp_path / f"{name}.safetensors")]) == 0
        assert ("prompt unsteered" in capsys.readouterr().out) is said
    stack = InterventionStack.load([tmp_path / "all.safetensors", tmp_path / "new.safetensors"])
    assert [p.steer_prompt for p in stack.with_steer_prompt(False).parts] == [False, False]


def test_apply_values_parse_and_refuse():
    assert apply_values({"strength": "2", "steer_prompt": "off"}) == {"strength": 2.0, "steer_prompt": False}
    assert apply_values({"strength": None}) == {}
    with pytest.raises(ValueError, match="only strength, steer_prompt"):
        apply_values({"hooks": "hook_post"})
    with pytest.raises(ValueError, match="steer_prompt"):
        apply_values({"steer_prompt": "maybe"})


def test_learn_takes_the_option(tiny):
    from toy_concept import toy_concept

    from aura_tl.learn import learn_intervention

    learned = learn_intervention(tiny, toy_concept(8), "linact", hooks="hook_attn_out", max_ppl_increase="none",
                                 steer_prompt=False, gate=True, progress=False)
    assert not learned.steer_prompt and learned.gated


def test_generate_command_overrides_the_files_choice(tmp_path, capsys):
    """`aura-tl generate --steer-prompt false` prints what generation with the prompt left unsteered gives."""
    from aura_tl.cli import main
    from aura_tl.generation import generate
    from aura_tl.models import load_model

    folder = save_tiny_llama(tmp_path / "tiny")
    model = load_model(str(folder), device="cpu")
    iv = shift(model, size=0.2)
    iv.save(tmp_path / "shift.safetensors")
    prompt = "Shut up, you stupid"
    config = SamplingConfig(max_new_tokens=6, do_sample=False)
    expected = {}
    for steer in (True, False):
        with iv.with_steer_prompt(steer).applied(model):
            expected[steer] = generate(model, [prompt], config)[0]
    assert expected[True] != expected[False]
    for flag, steer in (("false", False), ("true", True)):
        assert main(["generate", "--model", str(folder), "--device", "cpu", "--intervention",
                     str(tmp_path / "shift.safetensors"), "--steer-prompt", flag, "--prompt", prompt,
                     "--max-new-tokens", "6"]) == 0
        assert f"linact: {expected[steer]!r}" in capsys.readouterr().out


def test_scoring_from_bos_marks_each_rows_prompt(tiny):
    """token_logprobs_from_bos(prompt_lengths=...) under steer_prompt=False: rows of different lengths batched, each
    equal to a forward that edits from its prompt's last token on (position n after BOS), and to the plain steered
    scores where no prompt is given."""
    from aura_tl.calibrate import token_logprobs_from_bos
    from aura_tl.models import start_token_id

    bos = start_token_id(hf_tokenizer(tiny))
    rows, prompts = [[11, 12, 13, 14, 15, 16], [21, 22, 23], [31, 32, 33, 34]], [3, 1, 2]
    iv = shift(tiny, size=0.2)
    with iv.with_steer_prompt(False).applied(tiny):
        scoped = token_logprobs_from_bos(tiny, rows, prompt_lengths=prompts)
        unmarked = token_logprobs_from_bos(tiny, rows)
    with iv.applied(tiny):
        everywhere = token_logprobs_from_bos(tiny, rows)
    for row, n, got, plain, steered in zip(rows, prompts, scoped, unmarked, everywhere):
        tokens = torch.tensor([[bos] + row])
        with torch.inference_mode(), tiny.hooks(fwd_hooks=shifted_from(iv, n)):
            logprobs = torch.log_softmax(tiny(tokens)[0, :-1].float(), dim=-1)
        expected = logprobs.gather(1, tokens[0, 1:, None])[:, 0].numpy()
        assert got == pytest.approx(expected, abs=1e-4)
        assert plain == pytest.approx(steered, abs=1e-5)
        assert abs(got[n:] - steered[n:]).max() > 1e-3  # the prompt, left alone, changes what follows
