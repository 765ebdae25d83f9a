"""`aura-hooked` against lm-eval's own `hf` model on the same weights, and the registration."""

import os
import subprocess
import sys
import warnings

import pytest
from lm_eval.api.instance import Instance

PAIRS = [("The capital of France is", " Paris"), ("The capital of France is", " London"),
         ("Question: 2+2=?\nAnswer:", " 4"), ("I like to eat", " apples and bananas every day."),
         ("", "Hello world")]
CONTEXTS = ["The capital of Germany is", "Once upon a time", "Write a poem about cats:\n"]


@pytest.fixture(scope="module")
def pair():
    from lm_eval.models.huggingface import HFLM

    from aura_tl.models import resolve_hf_folder
    from lm_eval_plugin.model import AuraHookedLM

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = AuraHookedLM(method="none", batch_size=4, device="cpu")
        ref = HFLM(pretrained=str(resolve_hf_folder("smollm2-135m")), batch_size=4, device="cpu", dtype="float32")
    return ours, ref


@pytest.mark.equality
def test_loglikelihood_parity(pair):
    ours, ref = pair
    requests = [Instance("loglikelihood", {}, p, i) for i, p in enumerate(PAIRS)]
    for (a, ga), (b, gb) in zip(ours.loglikelihood(requests), ref.loglikelihood(requests)):
        assert abs(a - b) < 1e-3 and ga == gb
    rolling = [Instance("loglikelihood_rolling", {}, ("The quick brown fox jumps over the lazy dog. " * 20,), 0)]
    assert abs(ours.loglikelihood_rolling(rolling)[0] - ref.loglikelihood_rolling(rolling)[0]) < 1e-2


@pytest.mark.equality
def test_greedy_generation_parity(pair):
    ours, ref = pair
    requests = [Instance("generate_until", {}, (c, {"until": ["\n\n"], "max_gen_toks": 16, "do_sample": False}), i)
                for i, c in enumerate(CONTEXTS)]
    assert ours.generate_until(requests) == ref.generate_until(requests)


def test_intervention_changes_scores(tmp_path, smol):
    from aura_tl.data import load_concept_data
    from aura_tl.learn import learn_intervention
    from lm_eval_plugin.model import AuraHookedLM

    path = tmp_path / "aura.safetensors"
    learn_intervention(smol, load_concept_data("embedded", max_per_class=30), "aura", progress=False).save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        steered = AuraHookedLM(intervention=str(path), device="cpu", batch_size="auto")
    plain_requests = [Instance("loglikelihood", {}, ("You are a stupid", " idiot"), 0)]
    steered_lp = steered.loglikelihood(plain_requests)[0][0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain_lp = AuraHookedLM(method="none", device="cpu").loglikelihood(plain_requests)[0][0]
    assert steered.batch_size >= 1
    assert steered_lp != pytest.approx(plain_lp, abs=1e-3)


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})


def test_registration_leaves_lm_eval_models_working():
    done = run_python(
        "from lm_eval.api.registry import get_model\n"
        "print(get_model('aura-hooked').__name__, get_model('hf').__name__)\n"
        "from lm_eval.tasks import TaskManager\n"
        "tm = TaskManager()\n"
        "print(all(t in tm.all_tasks for t in ['rtp_toxicity', 'rtp_toxicity_25', 'piqa_local', 'piqa']))\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["AuraHookedLM", "HFLM", "True"]


def test_startup_hook_imports_nothing_heavy():
    done = run_python("import sys; print(any(m.split('.')[0] in ('lm_eval', 'torch', 'aura_tl') for m in sys.modules),"
                      " 'lm_eval_plugin.autoload' in sys.modules)")
    assert done.stdout.split() == ["False", "True"]


def test_method_linact_learns_at_start_up(smol):
    from lm_eval_plugin.model import AuraHookedLM

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        steered = AuraHookedLM(method="linact", max_per_class="16", hooks="blocks.1*.hook_attn_out", gate="probe",
                               max_ppl_increase="none", device="cpu")
        plain = AuraHookedLM(method="none", device="cpu")
    assert steered.intervention.method == "linact" and len(steered.intervention.hook_names) == 11  # blocks.1 and 10-19
    request = [Instance("loglikelihood", {}, ("You are a stupid", " idiot"), 0)]
    assert steered.loglikelihood(request)[0][0] != pytest.approx(plain.loglikelihood(request)[0][0], abs=1e-3)


@pytest.mark.parametrize("args, message", [
    ({"method": "aura", "strenght": "0.5"}, "did you mean 'strength'"),
    ({"method": "bogus"}, "unknown method 'bogus'"),
    ({"method": "aura", "strength": "2"}, "strength"),
    ({"method": "aura", "num_experts": "5"}, "not an option of method 'aura'"),
    ({"method": "none", "strength": "0.5"}, "need a method"),
    ({"intervention": "x.safetensors", "hooks": "hook_post"}, "only strength"),
    ({"intervention": "a.safetensors+b.safetensors", "strength": "0.5"}, "each applied at the strength saved"),
    ({"intervention": "x.safetensors", "save_intervention": "y.safetensors"}, "already a file"),
])
def test_bad_model_args_fail_before_the_model_loads(args, message, monkeypatch):
    from lm_eval_plugin import model as plugin

    monkeypatch.setattr(plugin, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    with pytest.raises(ValueError, match=message):
        plugin.AuraHookedLM(device="cpu", **args)


def test_default_model_args_steer_and_the_second_start_reads_the_cache(smol, tmp_path, monkeypatch, caplog):
    """`lm_eval --model aura-hooked` with no model_args applies the recommended intervention, says which, and a
    second construction reads it from the cache instead of learning."""
    import dataclasses
    import logging

    from aura_tl import cache
    from aura_tl.methods import DEFAULT_METHOD
    from lm_eval_plugin.model import AuraHookedLM

    monkeypatch.setenv("AURA_TL_CACHE", str(tmp_path))
    # the defaults' path end to end (what is tested is the wiring: the default options reach learning, are cached
    # under their key, calibrated to the default budget and said); learning itself runs lighter, on 48 sentences per
    # class instead of 398 and the tuned gate on the concept data for 5 steps, calibrated on the text panel: the
    # default at full size learns for 40 minutes on 2 cores (its recipe: test_gate_tuning.py, test_calibrate.py;
    # what it does: bench/ and docs/results/)
    full = cache.concept_data_for
    monkeypatch.setattr(cache, "concept_data_for",
                        lambda options, layout="auto", **kw: full(dataclasses.replace(options, max_per_class=48), layout, **kw))
    learn = cache.learn_intervention
    received = []

    def lighter(model, data, method, options, **kw):
        received.append(options)
        gate = dataclasses.replace(options.gate_options, gate_tune_toxic="concept", gate_tune_clean="none",
                                   gate_neutral="wikitext:64", gate_tune_steps=5)
        return learn(model, data, method, dataclasses.replace(options, gate_options=gate, calibration_panel="text"),
                     **kw)
    monkeypatch.setattr(cache, "learn_intervention", lighter)
    with warnings.catch_warnings(), caplog.at_level(logging.WARNING, logger="lm_eval_plugin.model"):
        warnings.simplefilter("ignore")
        steered = AuraHookedLM(device="cpu")
        plain = AuraHookedLM(method="none", device="cpu")
    info = steered.get_model_info()["aura_tl_intervention"]
    assert info["method"] == DEFAULT_METHOD and not info["cache_hit"] and info["data"] == "rtp-learn"
    from aura_tl.methods import get_method

    defaults = get_method(DEFAULT_METHOD).options()
    assert received == [defaults]  # no model_args: the method's defaults reach learning, nothing else
    assert steered.intervention.gate_rule.name == defaults.gate and sorted(steered.intervention.hook_names) == sorted(
        f"blocks.{i}.hook_attn_out" for i in range(20, 30))  # the later third of SmolLM2's 30 blocks
    chosen = steered.intervention.strength  # calibrated: the strongest lambda <= the default within the budget
    assert steered.intervention.metadata["calibration"]["max_ppl_increase"] == defaults.max_ppl_increase
    assert 0 < chosen <= defaults.strength and steered.intervention.metadata["calibration"]["chosen_strength"] == chosen
    assert f"{DEFAULT_METHOD}, lambda {chosen:g}" in caplog.text and "none (unsteered)" in caplog.text
    assert ("gated (conditional steering)" in caplog.text) == bool(defaults.gate) and info["gated"] == bool(defaults.gate)
    request = [Instance("loglikelihood", {}, ("You are a stupid", " idiot"), 0)]
    assert steered.loglikelihood(request)[0][0] != pytest.approx(plain.loglikelihood(request)[0][0], abs=1e-3)

    monkeypatch.setattr(cache, "learn_intervention", lambda *a, **k: pytest.fail("learned instead of reading the cache"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = AuraHookedLM(device="cpu")
    assert again.get_model_info()["aura_tl_intervention"]["cache_hit"]
    assert again.loglikelihood(request)[0][0] == pytest.approx(steered.loglikelihood(request)[0][0], abs=1e-5)


def test_a_stacked_intervention_file_loads_and_says_what_it_applies(tiny, tmp_path):
    """`intervention=a+b`: both files load before the model, come back as one stack at their saved strengths, and
    the log line names both methods and strengths."""
    import torch

    from aura_tl.intervention import Intervention, InterventionStack
    from aura_tl.models import ModelShape
    from lm_eval_plugin.model import describe_intervention, plan_intervention

    d = tiny.cfg.d_model
    for name, strength in (("a", 1.0), ("b", 0.25)):
        Intervention("aura", {"blocks.0.hook_attn_out": {"alpha": torch.rand(d)}}, ModelShape.of(tiny), {},
                     strength).save(tmp_path / f"{name}.safetensors")
    path = f"{tmp_path / 'a.safetensors'}+{tmp_path / 'b.safetensors'}"
    loaded, info = plan_intervention(path, None, {})(tiny)
    assert isinstance(loaded, InterventionStack) and loaded.strengths == [1.0, 0.25]
    assert describe_intervention(info) == f"aura+aura, lambda 1+0.25, file {path}"
    with pytest.raises(FileNotFoundError):
        plan_intervention(f"{tmp_path / 'a.safetensors'}+{tmp_path / 'missing.safetensors'}", None, {})
