"""Shared fixtures: the real SmolLM2-135M (session-wide), a tiny random HookedTransformer with SmolLM2's
tokenizer for fast unit tests, and the shared data folder (tests that need it skip with a reason when absent)."""

from __future__ import annotations

import warnings
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


@pytest.fixture(scope="session")
def tiny():
    """2 layers, gated SiLU MLP (so hook_pre_linear exists), rotary, RMSNorm; random weights, seed 0."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformers import AutoTokenizer

    from aura_tl.models import resolve_hf_folder

    tokenizer = AutoTokenizer.from_pretrained(str(resolve_hf_folder("smollm2-135m")))
    cfg = HookedTransformerConfig(
        n_layers=2, d_model=32, n_heads=4, d_head=8, d_mlp=48, d_vocab=tokenizer.vocab_size, n_ctx=64,
        act_fn="silu", normalization_type="RMS", positional_embedding_type="rotary", rotary_dim=8, gated_mlp=True,
        model_name="tiny-test", seed=0, device="cpu", default_prepend_bos=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        model = HookedTransformer(cfg, tokenizer=tokenizer)
    torch.manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0, 0.2)
    model._aura_tl_hf_tokenizer = tokenizer
    return model.eval()


REAL_MODEL_FIXTURES = {"smol", "smol_hf", "pair", "learned"}


def pytest_collection_modifyitems(config, items):
    """Every test that loads the real SmolLM2 is `slow`, so `-m "not slow"` is the quick loop."""
    for item in items:
        if REAL_MODEL_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
