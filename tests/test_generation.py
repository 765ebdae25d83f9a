import pytest
import torch

from aura_tl.generation import SamplingConfig, generate, next_token

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
