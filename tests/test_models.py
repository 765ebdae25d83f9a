import pytest
import torch

from aura_tl.models import ModelShape, hf_tokenizer, load_model, resolve_hf_folder


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
