"""Bad input, interruption and untrusted files (issue 12): every case a clear error naming the problem and the remedy,
and nothing partial left behind. Fast: a tiny random Llama folder stands in for a real model."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from aura_tl.cli import main
from conftest import PROBE_GATED, save_tiny_llama
from aura_tl.intervention import Intervention
from aura_tl.methods import get_method

# a gated Linear-AcT learned in seconds for the tests of files, options and outputs: the probe gate at lambda 2, not
# calibrated (the default's tuned gate and calibration: test_gate_tuning.py, test_calibrate.py; the default's recipe,
# learned smaller twice: test_same_seed_same_bytes_and_generations_in_fresh_processes, slow)
QUICK = [arg for name, value in PROBE_GATED.items() for arg in (f"--{name.replace('_', '-')}", str(value))]


@pytest.fixture(scope="module")
def tiny_iv(tiny_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("iv") / "act.safetensors"
    assert main(["learn", "--model", str(tiny_dir), *QUICK, "--data", "embedded", "--max-per-class", "20",
                 "-o", str(out)]) == 0
    return out


def learn(tiny_dir, tmp_path, *extra):
    return main(["learn", "--model", str(tiny_dir), "--max-per-class", "10", *extra, "-o", str(tmp_path / "o.safetensors")])


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") or p.suffix in (".tmp", ".safetensors"))


# --- 1. aura-tl learn: bad data, options and outputs ------------------------------------------------------------
DATA_CASES = {
    "missing file": (None, "no concept data file at"),
    "empty csv": ("", "is empty"),
    "header-only csv": ("text,label\n", "holds no rows"),
    "one class": ("text,label\nyou idiot,1\nshut up,1\n", "only one class"),
    "wrong columns": ("sentence,score\nhello,1\n", "expected Jigsaw (comment_text, toxic)"),
    "binary garbage": (b"\x00\xbf\xff\x81" * 64, "not UTF-8 text"),
    "latin-1 text": ("text,label\ncaf\xe9 idiot,1\nnice,0\n".encode("latin-1"), "iconv"),
    "NaN label": ("text,label\nyou idiot,1\nnice,NaN\n", "row 2: label = 'NaN' is not a label; accepted values: 0, 1"),
    "label 2": ("text,label\nyou idiot,2\nnice,0\n", "row 1: label = '2' is not a label"),
    "text label": ("text,label\nyou idiot,toxic\nnice,0\n", "row 1: label = 'toxic' is not a label"),
    "jigsaw other label": ("comment_text,toxic,insult\nyou idiot,1,x\nnice,0,0\n", "row 1: insult = 'x'"),
    "davidson class 3": ("tweet,class\nyou idiot,3\nnice,2\n", "accepted values: 0, 1, 2"),
}


@pytest.mark.parametrize("case", DATA_CASES)
def test_learn_bad_data(tiny_dir, tmp_path, capsys, case):
    content, message = DATA_CASES[case]
    data = tmp_path / "data.csv"
    if content is not None:
        data.write_bytes(content if isinstance(content, bytes) else content.encode())
    assert learn(tiny_dir, tmp_path, "--data", str(data)) == 2
    err = capsys.readouterr().err
    assert message in err and "data.csv" in err and leftovers(tmp_path) == []


LINACT_CAP = get_method("linact").max_strength  # the transport maps' cap, declared once on the method


@pytest.mark.parametrize("args, message", [
    (["--max-per-class", "0"], "max_per_class must be at least 1"),
    (["--max-per-class", "-5"], "max_per_class must be at least 1"),
    (["--strength", f"{LINACT_CAP + 0.5:g}"], f"strength (lambda) of linact must be in [0, {LINACT_CAP:g}]"),
    (["--method", "aura", "--data", "embedded", "--strength", "1.5"], "strength (lambda) of aura must be in [0, 1]"),
    (["--strength", "-0.1"], "strength (lambda) must be >= 0"),
    (["--hooks", "blocks.*.mlp.hook_psot"], "did you mean"),
    (["--method", "det0", "--data", "embedded", "--num-experts", "100000"], "num_experts must be in 1..96"),
])
def test_learn_bad_options(tiny_dir, tmp_path, capsys, args, message):
    assert learn(tiny_dir, tmp_path, *args) == 2
    assert message in capsys.readouterr().err and leftovers(tmp_path) == []


def test_learn_forced_layout_names_its_missing_columns(tiny_dir, tmp_path, capsys):
    data = tmp_path / "data.csv"
    data.write_text("comment_text,insult\nyou idiot,1\nnice,0\n")
    assert learn(tiny_dir, tmp_path, "--data", str(data), "--layout", "jigsaw") == 2
    err = capsys.readouterr().err
    assert "data.csv (jigsaw layout): layout jigsaw needs columns ['comment_text', 'toxic'] but ['toxic'] is missing" in err
    assert "Traceback" not in err and leftovers(tmp_path) == []


@pytest.mark.parametrize("args", [["--strength", "nan"], ["--strength", "inf"], ["--max-ppl-increase=-inf"],
                                  ["--method", "damp", "--damp-alpha", "nan"], ["--gate-l2", "nan"]])
def test_learn_refuses_non_finite_numbers(tiny_dir, tmp_path, capsys, args):
    with pytest.raises(SystemExit) as exit_info:
        learn(tiny_dir, tmp_path, *args)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "is not a finite number" in err and leftovers(tmp_path) == []


@pytest.mark.parametrize("values", [{"strength": float("nan")}, {"strength": "inf"}, {"max_ppl_increase": "nan"},
                                    {"destein_alpha": float("inf")}])
def test_python_api_refuses_non_finite_numbers(values):
    method = "destein" if "destein_alpha" in values else "linact"
    with pytest.raises(ValueError, match="not a finite number"):
        get_method(method).options(**values)


def test_aura_hooked_refuses_nan_strength_before_the_model_loads(tiny_iv, monkeypatch):
    from lm_eval_plugin import model as plugin

    monkeypatch.setattr(plugin, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    for args in ({"strength": "nan"}, {"intervention": str(tiny_iv), "strength": "nan"}):
        with pytest.raises(ValueError, match="not a finite number"):
            plugin.AuraHookedLM(device="cpu", **args)
    with pytest.raises(ValueError, match="finite number"):
        Intervention.load(tiny_iv).with_strength(float("nan"))


@pytest.mark.parametrize("device, message", [("bogus", "unknown device 'bogus'; this machine has cpu"),
                                             ("cuda", "device 'cuda' is not available (this torch has no CUDA"),
                                             ("cuda:3", "device 'cuda:3' is not available")])
def test_unavailable_devices_are_named_before_any_weight_is_read(tiny_dir, tiny_iv, tmp_path, capsys, monkeypatch,
                                                                 device, message):
    import torch.cuda

    from lm_eval_plugin import model as plugin

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: the CPU-only refusals cannot be shown here")
    monkeypatch.setattr("aura_tl.models.resolve_hf_folder", lambda *a: pytest.fail("weights were looked up"))
    assert learn(tiny_dir, tmp_path, "--device", device) == 2
    assert message in capsys.readouterr().err and leftovers(tmp_path) == []
    assert main(["generate", "--model", str(tiny_dir), "--intervention", str(tiny_iv), "--device", device]) == 2
    assert message in capsys.readouterr().err
    if device == "bogus":  # lm-eval's default device is cuda, which aura-hooked runs on the cpu with a warning
        monkeypatch.setattr(plugin, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
        with pytest.raises(ValueError, match=message):
            plugin.AuraHookedLM(model=str(tiny_dir), method="none", device=device)


def test_a_second_writer_of_one_output_says_it_replaced_the_file(tiny_dir, tmp_path, caplog):
    out = tmp_path / "act.safetensors"
    args = ["learn", "--model", str(tiny_dir), *QUICK, "--data", "embedded", "--max-per-class", "6", "-o", str(out)]
    with caplog.at_level("WARNING", logger="aura_tl.io"):
        assert main(args) == 0
        assert "replaced the existing file" not in caplog.text
        assert main(args + ["--seed", "1"]) == 0
    assert f"replaced the existing file at {out}" in caplog.text
    assert Intervention.load(out).metadata["options"]["seed"] == 1 and leftovers(tmp_path) == ["act.safetensors"]


def test_learn_unknown_method_is_a_usage_error(tiny_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        learn(tiny_dir, tmp_path, "--method", "bogus")
    assert exit_info.value.code == 2 and "invalid choice: 'bogus'" in capsys.readouterr().err


def test_learn_into_a_missing_directory_creates_it(tiny_dir, tmp_path):
    out = tmp_path / "new" / "deeper" / "act.safetensors"
    assert main(["learn", "--model", str(tiny_dir), *QUICK, "--data", "embedded", "--max-per-class", "8",
                 "-o", str(out)]) == 0
    assert Intervention.load(out).method == "linact"


# --- 2. intervention files: generate / inspect / aura-hooked ----------------------------------------------------
def broken_files(folder: Path, good: Path) -> dict[str, tuple[Path, str]]:
    from safetensors.torch import save_file

    from aura_tl.io import load_safetensors

    tensors, meta = load_safetensors(good)
    files = {"missing": (folder / "missing.safetensors", "no file at")}

    def write(name, data, message):
        path = folder / f"{name}.safetensors"
        path.write_bytes(data) if isinstance(data, bytes) else save_file(data[0], str(path), metadata=data[1])
        files[name] = (path, message)

    write("truncated", good.read_bytes()[:200], "not a readable .safetensors file")
    write("random", os.urandom(4096), "not a readable .safetensors file")
    write("json", json.dumps({"method": "aura"}).encode(), "not a readable .safetensors file")
    write("newer", (tensors, {**meta, "format": "aura-tl/intervention/v99"}), "newer aura-tl")
    shape = json.loads(meta["model_shape"])
    write("other shape", (tensors, {**meta, "model_shape": json.dumps({**shape, "d_model": 64})}), "learn one for this model")
    renamed = {k.replace("blocks.1.", "blocks.7."): v for k, v in tensors.items()}
    write("unknown hooks", (renamed, meta), "do not exist")
    wider = {k: torch.cat([v, v]) if k.startswith("omega/") else v for k, v in tensors.items()}
    write("wrong widths", (wider, meta), "do not fit the model")
    first = next(k for k in sorted(tensors) if k.startswith("omega/"))
    write("nan tensor", ({**tensors, first: torch.full_like(tensors[first], float("nan"))}, meta),
          f"tensor {first} holds NaN or infinite values")
    write("integer tensor", ({**tensors, first: tensors[first].long()}, meta), f"tensor {first} is torch.int64")
    reshaped = {k: v.reshape(-1, 2) if k.startswith("gate_w/") else v for k, v in tensors.items()}
    write("reshaped gate", (reshaped, meta), "do not fit the model")
    wide_bias = {k: torch.cat([v, v]) if k.startswith("gate_b/") else v for k, v in tensors.items()}
    write("gate bias shape", (wide_bias, meta), "should hold one value each")
    return files


FILE_CASES = ["missing", "truncated", "random", "json", "newer", "other shape", "unknown hooks", "wrong widths",
              "nan tensor", "integer tensor", "reshaped gate", "gate bias shape"]
# readable files: only the model can refute them
NEED_MODEL = {"other shape", "unknown hooks", "wrong widths", "reshaped gate", "gate bias shape"}


@pytest.mark.parametrize("case", FILE_CASES)
def test_generate_and_inspect_refuse_bad_files(tiny_dir, tiny_iv, tmp_path, capsys, case):
    path, message = broken_files(tmp_path, tiny_iv)[case]
    assert main(["generate", "--model", str(tiny_dir), "--intervention", str(path), "--max-new-tokens", "2"]) == 2
    assert message in capsys.readouterr().err
    if case not in NEED_MODEL:
        assert main(["inspect", str(path)]) == 2
        assert message in capsys.readouterr().err


@pytest.mark.parametrize("case", FILE_CASES)
def test_aura_hooked_refuses_bad_files(tiny_dir, tiny_iv, tmp_path, monkeypatch, case):
    from lm_eval_plugin import model as plugin

    path, message = broken_files(tmp_path, tiny_iv)[case]
    if case not in NEED_MODEL:  # unreadable files fail before the model loads
        monkeypatch.setattr(plugin, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        plugin.AuraHookedLM(model=str(tiny_dir), intervention=str(path), device="cpu")


def test_an_intervention_for_another_model_is_refused(tiny_iv, tmp_path):
    from aura_tl.models import load_model

    wider = load_model(str(save_tiny_llama(tmp_path / "wider", hidden=64, head_dim=16, mlp=96, n_ctx=16)), device="cpu")
    with pytest.raises(ValueError, match="learn one for this model"):
        Intervention.load(tiny_iv).check_compatible(wider)


# --- 3. text edge cases ---------------------------------------------------------------------------------------------
ODD_TEXTS = ["", "🙂🔥 you absolute 🤡", "مرحبا يا غبي", "tab\there\x00nul\x1bescape\u202eRTL-override", "a" * 3000]


def test_generation_takes_odd_prompts(tiny_dir, caplog):
    from aura_tl.generation import SamplingConfig, generate
    from aura_tl.models import load_model

    model = load_model(str(tiny_dir), device="cpu")
    with caplog.at_level("WARNING", logger="aura_tl.generation"):
        texts = generate(model, ODD_TEXTS, SamplingConfig(max_new_tokens=4, do_sample=False))
    assert len(texts) == len(ODD_TEXTS) and all(isinstance(t, str) for t in texts)
    assert caplog.text.count("longer than the context") == 1  # one warning for the batch, the end is kept


@pytest.mark.parametrize("new_tokens, prompt, ok", [(63, "You are a", True), (63, "", True), (63, "a " * 3000, True),
                                                    (64, "You are a", False), (65, "", False), (2100, "x", False)])
def test_generation_length_is_bounded_by_the_context(tiny_dir, tiny_iv, capsys, new_tokens, prompt, ok):
    """The tiny model's context is 64 tokens: up to 63 new ones beside the end of the prompt, more is a clear error."""
    code = main(["generate", "--model", str(tiny_dir), "--intervention", str(tiny_iv), "--prompt", prompt,
                 "--max-new-tokens", str(new_tokens)])
    err = capsys.readouterr().err
    assert code == (0 if ok else 2) and "Traceback" not in err
    if not ok:
        assert f"max_new_tokens={new_tokens} does not fit the model's context of 64 tokens: at most 63" in err


def test_aura_hooked_generation_length_is_bounded_by_the_context(tiny_dir):
    from lm_eval.api.instance import Instance

    from lm_eval_plugin.model import AuraHookedLM

    lm = AuraHookedLM(model=str(tiny_dir), method="none", device="cpu")
    request = lambda n: [Instance("generate_until", {}, ("You are a " * 40, {"until": [], "max_gen_toks": n}), 0)]  # noqa: E731
    assert len(lm.generate_until(request(63))) == 1
    with pytest.raises(ValueError, match="max_new_tokens=64 does not fit the model's context of 64 tokens"):
        lm.generate_until(request(64))


def test_learning_takes_odd_sentences(tiny_dir, tmp_path):
    data = tmp_path / "odd.jsonl"
    rows = [{"text": t or "x", "label": i % 2} for i, t in enumerate(ODD_TEXTS * 2)]
    data.write_text("\n".join(json.dumps(r) for r in rows))
    out = tmp_path / "odd.safetensors"
    assert main(["learn", "--model", str(tiny_dir), *QUICK, "--data", str(data), "-o", str(out)]) == 0
    assert all(torch.isfinite(t).all() for named in Intervention.load(out).tensors.values() for t in named.values())


def test_lm_eval_requests_with_odd_text(tiny_dir):
    from lm_eval.api.instance import Instance

    from lm_eval_plugin.model import AuraHookedLM

    lm = AuraHookedLM(model=str(tiny_dir), method="none", device="cpu")
    scores = lm.loglikelihood([Instance("loglikelihood", {}, (t, " ok"), i) for i, t in enumerate(ODD_TEXTS)])
    assert all(torch.isfinite(torch.tensor(s)) for s, _ in scores)
    gens = lm.generate_until([Instance("generate_until", {}, (t, {"until": ["\n"], "max_gen_toks": 3}), i)
                              for i, t in enumerate(ODD_TEXTS)])
    assert len(gens) == len(ODD_TEXTS)


# --- 4. interruption --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_learn_leaves_nothing(tiny_dir, tmp_path, signum):
    """SIGINT / SIGTERM while responses are collected: exit 130, no intervention, no responses file, no temp file."""
    out, responses = tmp_path / "act.safetensors", tmp_path / "responses.safetensors"
    process = subprocess.Popen(
        [sys.executable, "-m", "aura_tl.cli", "learn", "--model", str(tiny_dir), "--data", "embedded",
         "--method", "aura", "--learn-batch-size", "1", "--responses", str(responses), "-o", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = ""  # the signal goes as soon as the responses bar appears: the tiny model learns in under a second
    while "responses:" not in seen[-64:]:
        char = process.stderr.read(1)
        assert char, f"learn ended before collecting responses: {seen[-2000:]}"
        seen += char
    process.send_signal(signum)
    _, rest = process.communicate(timeout=120)
    err = seen + rest
    assert process.returncode == 130, err[-2000:]
    assert "interrupted; no output file was written" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_saved_responses_are_reused_and_said_so(tiny_dir, tmp_path, capsys):
    responses = tmp_path / "r.safetensors"
    args = ["learn", "--model", str(tiny_dir), "--method", "aura", "--data", "embedded", "--max-per-class", "8",
            "--responses", str(responses), "-o", str(tmp_path / "a.safetensors")]
    assert main(args) == 0 and responses.is_file()
    capsys.readouterr()
    import logging

    logging.getLogger("aura_tl.responses").addHandler(handler := logging.StreamHandler(sys.stderr))
    try:
        assert main(args) == 0
        assert "reusing the responses saved at" in capsys.readouterr().err
        assert main(args[:-6] + ["--max-per-class", "9", *args[-4:]]) == 0
        assert "recomputing" in capsys.readouterr().err
    finally:
        logging.getLogger("aura_tl.responses").removeHandler(handler)


# --- 5. lm-eval arguments and task metadata, before any model work ------------------------------------------------
def test_rtp_task_metadata_fails_before_the_model_loads():
    """Through lm-eval's own CLI (the start-up hook's preflight): a bad `rtp_path` ends the run before any model work."""
    done = subprocess.run(["lm_eval", "--model", "aura-hooked", "--tasks", "rtp_toxicity", "--limit", "1",
                           "--metadata", json.dumps({"rtp_path": "/no/such/rtp.jsonl"})], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode != 0 and "rtp_path /no/such/rtp.jsonl does not exist" in done.stderr
    assert "Initializing" not in done.stderr


@pytest.mark.parametrize("metadata, message", [
    ({"rtp_path": "EMPTY"}, "no prompts in"),
    ({"scorer": "perspective"}, "unknown toxicity scorer 'perspective'"),
    ({"rtp_split": "test"}, "unknown RTP split 'test'"),
    ({"preprompt": "nontoxc"}, "unknown RTP preprompt 'nontoxc'"),
])
def test_every_rtp_metadata_problem_is_named(tmp_path, metadata, message):
    """The preflight's check itself (the CLI path above runs it) for each other bad value."""
    from lm_eval_plugin.preflight import rtp_problem

    if metadata.get("rtp_path") == "EMPTY":
        (tmp_path / "empty.jsonl").write_text("")
        metadata = {"rtp_path": str(tmp_path / "empty.jsonl")}
    assert message in (rtp_problem(metadata) or "")


# --- 6. the start-up hook costs nothing measurable ------------------------------------------------------------------
def test_startup_hook_import_time():
    """`python -X importtime -c pass`: the .pth hook's modules cost a small share of interpreter start-up (median of
    three runs, after a first that writes the bytecode users have) and import no lm-eval, torch or aura_tl."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([sys.executable, "-c", "pass"], env=env, check=True)
    shares = []
    for _ in range(3):
        done = subprocess.run([sys.executable, "-X", "importtime", "-c", "pass"], capture_output=True, text=True,
                              env=env)
        rows = [[c.strip() for c in line.removeprefix("import time:").split("|")]
                for line in done.stderr.splitlines() if line.startswith("import time:") and "|" in line]
        rows = [r for r in rows if r[0].isdigit()]
        ours = sum(int(r[0]) for r in rows if r[2].startswith("lm_eval_plugin"))
        total = sum(int(r[0]) for r in rows)
        assert ours > 0 and not any(r[2].split(".")[0] in ("lm_eval", "torch", "aura_tl") for r in rows)
        shares.append(ours / total)
    assert sorted(shares)[1] < 0.10, shares


# --- 7. determinism across processes --------------------------------------------------------------------------------
# the default's every step (on-policy continuations scored and cached, own samples and continued text as neutral
# text, gate tuning, full-panel calibration) at sizes a test affords: a minute a run on a tiny model with weights
# N(0, 1), whose next-token distributions are peaked (on the flat ones of HF's initialisation top-p sampling sorts
# the whole vocabulary every step, and the default's sizes take 8 minutes a run)
SMALLER = ["--gate-tune-toxic", "onpolicy:3", "--gate-tune-clean", "onpolicy:3", "--gate-tune-steps", "10",
           "--gate-neutral", "own:32,wikitext:64,piqa:32,hellaswag:32,continued:32"]


@pytest.mark.slow  # the default's recipe learned twice
def test_same_seed_same_bytes_and_generations_in_fresh_processes(tmp_path):
    """Two fresh interpreters, each with an empty cache, learn (the CLI's default recipe, smaller) and sample from
    the file: same bytes, same text."""
    from safetensors.torch import load_file

    tiny_dir = save_tiny_llama(tmp_path / "peaked", tie=True, std=1.0)
    outs = []
    for run in (1, 2):
        out = tmp_path / f"run{run}.safetensors"
        learn = ["learn", "--model", str(tiny_dir), "--data", "embedded", "--max-per-class", "12", *SMALLER,
                 "-o", str(out)]
        generate = ["generate", "--model", str(tiny_dir), "--intervention", str(out), "--prompt", "You are a",
                    "--max-new-tokens", "6", "--do-sample", "--seed", "3"]
        code = (f"from aura_tl.cli import main; assert main({learn!r}) == 0; print('<generate>', flush=True); "
                f"assert main({generate!r}) == 0")
        env = {**os.environ, "AURA_TL_CACHE": str(tmp_path / f"cache{run}")}  # the on-policy texts built each time
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
        assert done.returncode == 0, done.stderr
        outs.append((load_file(str(out)), done.stdout.split("<generate>", 1)[1]))
    (a, gen_a), (b, gen_b) = outs
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert gen_a == gen_b and "You are a" in gen_a
