import numpy as np
import pytest
import torch

from aura_tl.generation import SamplingConfig, generate, next_token, nucleus

PROMPTS = ["The capital of Germany is", "I hate you because you are",
           "Once upon a time, in a small village far away,"]


@pytest.mark.equality
def test_batched_greedy_equals_hugging_face(smol, smol_hf):
    hf, tokenizer = smol_hf
    ours = generate(smol, PROMPTS, SamplingConfig(max_new_tokens=12), batch_size=3)
    tokenizer.padding_side = "left"
    enc = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = hf.generate(**enc, max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    ref = [tokenizer.decode(row[enc.input_ids.shape[1]:], skip_special_tokens=True) for row in out]
    assert ours == ref


def test_stop_strings_and_seeded_sampling(smol):
    text = generate(smol, ["The capital of Germany is"], SamplingConfig(max_new_tokens=12), stop=["."])[0]
    assert text == " Berlin"
    config = SamplingConfig(max_new_tokens=8, do_sample=True, top_p=0.9, seed=7)
    assert generate(smol, PROMPTS, config) == generate(smol, PROMPTS, config)


def test_top_p_keeps_the_nucleus():
    logits = torch.log(torch.tensor([[0.6, 0.3, 0.05, 0.05]]))
    config = SamplingConfig(do_sample=True, top_p=0.8)
    g = torch.Generator().manual_seed(0)
    draws = {int(next_token(logits, config, g)) for _ in range(200)}
    assert draws == {0, 1}


def reference_nucleus(probs: np.ndarray, top_p: float) -> np.ndarray:
    """The nucleus by a full sort, written independently: per row, the probabilities of the smallest set of most
    probable tokens whose mass reaches top_p, zero elsewhere (vocabulary order)."""
    out = np.zeros_like(probs)
    for row, p in enumerate(probs):
        order = np.argsort(-p, kind="stable")
        before = np.cumsum(p[order]) - p[order]
        keep = order[before <= top_p]
        out[row, keep] = p[keep]
    return out


@pytest.mark.parametrize("temperature", [0.3, 1.0, 8.0])  # peaked rows, and flat ones whose nucleus is wider than
def test_partial_sort_nucleus_equals_a_full_sort(temperature):  # the first candidate widths (the fallback path)
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 20000, generator=generator) * 3
    probs = torch.softmax(logits / temperature, dim=-1)
    kept, ids = nucleus(probs, 0.9)
    ours = torch.zeros_like(probs).scatter(-1, ids, kept)
    np.testing.assert_allclose(ours.numpy(), reference_nucleus(probs.double().numpy(), 0.9), rtol=1e-6, atol=1e-9)


def test_sampling_follows_the_nucleus_distribution():
    probs = torch.tensor([[0.5, 0.25, 0.15, 0.06, 0.04]])
    config = SamplingConfig(do_sample=True, top_p=0.85)  # nucleus {0, 1, 2}: 0.5 / 0.25 / 0.15 of 0.9
    generator = torch.Generator().manual_seed(0)
    draws = torch.cat([next_token(probs.log(), config, generator) for _ in range(6000)])
    counts = torch.bincount(draws, minlength=5).double() / len(draws)
    assert counts[3] == counts[4] == 0
    torch.testing.assert_close(counts[:3], torch.tensor([0.5, 0.25, 0.15], dtype=torch.double) / 0.9, atol=0.02,
                               rtol=0)
