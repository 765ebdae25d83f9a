"""Shared fixtures: the real SmolLM2-135M and Gemma-3-270M (session-wide), tiny random Llamas with SmolLM2's tokenizer for fast unit
tests (loaded through the same code as real models, by the backend under test: `$AURA_TL_BACKEND`, else the
TransformerLens default), and the shared data folder (tests that need it skip with a reason when absent)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from aura_tl.paths import shared_data_dir


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if path is None:
        pytest.skip("shared data folder not found (set AURA_SHARED_DATA or put ../shared/data beside the checkout)")
    return path


@pytest.fixture(scope="session")
def smol():
    from aura_tl.models import load_model

    return load_model("smollm2-135m", device="cpu")


@pytest.fixture(scope="session")
def smol_hf():
    from aura_tl.models import load_hf

    return load_hf("smollm2-135m")


def embedded_or_skip(alias: str):
    """Skip (naming the install command) where the packages of an embedded model are not installed."""
    from aura_tl.models import EMBEDDED_MODELS, _package_dir

    try:
        _package_dir(alias)
    except FileNotFoundError:
        pytest.skip(f"{alias} is not installed: {EMBEDDED_MODELS[alias].install}")


@pytest.fixture(scope="session")
def gemma():
    """Gemma-3-270M (base; the second embedded model), by the backend under test."""
    from aura_tl.models import load_model

    embedded_or_skip("gemma3-270m")
    return load_model("gemma3-270m", device="cpu")


@pytest.fixture(scope="session")
def gemma_hf():
    from aura_tl.models import load_hf

    embedded_or_skip("gemma3-270m")
    return load_hf("gemma3-270m")


def save_tiny_llama(folder: Path, *, hidden: int = 32, heads: int = 4, head_dim: int = 8, mlp: int = 48,
                    layers: int = 2, n_ctx: int = 64, tie: bool = False, std: float | None = 0.2) -> Path:
    """A random Llama (gated SiLU MLP, rotary, RMSNorm) with SmolLM2's tokenizer, saved as a Hugging Face folder:
    what every backend loads the same way as a real model. `std` redraws every weight from N(0, std) (seed 0), so
    activations are far from zero and a wrong edit shows; None keeps HF's initialisation."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from aura_tl.models import resolve_hf_folder

    tokenizer = AutoTokenizer.from_pretrained(str(resolve_hf_folder("smollm2-135m")))
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=mlp,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                         head_dim=head_dim, max_position_embeddings=n_ctx, tie_word_embeddings=tie,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    if std is not None:
        with torch.no_grad():
            for param in model.parameters():
                param.normal_(0, std)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    """A 2-layer random Llama (d_model 32, HF's initialisation) as a Hugging Face folder."""
    return save_tiny_llama(tmp_path_factory.mktemp("tinyrandom") / "tiny-random", tie=True, std=None)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """2 layers, d_model 32, 4 heads of 8, gated SiLU MLP (so hook_pre_linear exists), rotary, RMSNorm, n_ctx 64;
    weights N(0, 0.2), seed 0; loaded by the backend under test (`$AURA_TL_BACKEND`, else the default)."""
    from aura_tl.models import load_model

    folder = save_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-test")
    return load_model(str(folder), device="cpu")


# Linear-AcT learned in seconds, for tests of files, options, backends and caching (not of the default recipe):
# the fitted probe gate at lambda 2, not calibrated
PROBE_GATED = {"gate": "probe", "strength": 2.0, "max_ppl_increase": "none"}
# the default's tuned gate, tuned briefly on the concept data alone (no on-policy or neutral text to build)
TUNED_BRIEFLY = {"gate_tune_toxic": "concept", "gate_tune_clean": "none", "gate_neutral": "none", "gate_tune_steps": 3}


REAL_MODEL_FIXTURES = {"smol", "smol_hf", "pair", "learned", "smol_pair", "gemma", "gemma_hf", "gemma_pair"}


MODEL_FIXTURES = REAL_MODEL_FIXTURES | {"tiny", "tiny_dir"}


def pytest_collection_modifyitems(config, items):
    """Every test that loads a real model is `slow`, so `-m "not slow"` is the quick loop; every test that runs a
    model through a fixture is `model` (the TransformerLens 4 leg of CI runs those again, not the model-free ones)."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if REAL_MODEL_FIXTURES & fixtures:
            item.add_marker(pytest.mark.slow)
        if MODEL_FIXTURES & fixtures:
            item.add_marker(pytest.mark.model)
