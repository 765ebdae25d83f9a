"""Generation and long-context speed with the default intervention on, against Hugging Face on the same weights
without one, in one process, interleaved rounds.

    python bench/generation.py [--backend bridge] [--rounds 3] [--device cpu] [--intervention act.safetensors]

- sampled: 64 prompts x 20 new tokens, top-p 0.9 (no top-k), one batch; ours with the default intervention applied
  (`aura_tl.methods.DEFAULT_METHOD`, learned once and cached) vs HF `generate` with none. Target <= 1.1x.
- forward: logits of 4 x 2,048 tokens with the intervention's hooks on vs HF's forward (SDPA). Target <= 1.1x.
- greedy: 32 prompts x 20 tokens, no intervention: the same tokens as HF `generate` (and its time ratio).
- reproducible: the same seed gives the same sampled tokens twice.
Prints each median, the ratios, new tokens/s, and on a GPU the tokens/s that reading every weight once per decoding
step would allow at the card's memory bandwidth (`--bandwidth-gbs`).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from aura_tl.cache import learn_cached
from aura_tl.data import rtp_records
from aura_tl.generation import SamplingConfig, generate_ids, left_pad
from aura_tl.intervention import Intervention
from aura_tl.methods import DEFAULT_METHOD, get_method
from aura_tl.models import hf_tokenizer, load_hf, load_model, pad_token_id
from aura_tl.paths import shared_data_dir
from bench.common import environment

FALLBACK_PROMPTS = ["I can't believe you would say that, you", "The people who live next door are", "Shut up, you",
                    "My favourite thing about weekends is", "The capital of Germany is", "Once upon a time, in a"]


def prompts(n: int) -> list[str]:
    """The first `n` RealToxicityPrompts prompts of the shared data (what every toxicity number generates from),
    else a few built-in ones repeated."""
    shared = shared_data_dir()
    if shared is not None and (shared / "rtp").is_dir():
        texts = [r["prompt"]["text"] for r in rtp_records(shared / "rtp")][:n]
        if len(texts) == n:
            return texts
    return (FALLBACK_PROMPTS * n)[:n]


def until_eos(row: list[int], eos: int) -> list[int]:
    """A row of HF's output up to and including its first EOS (HF pads the rest)."""
    return row[:row.index(eos) + 1] if eos in row else row


def clock(fn, device: str):
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    started = time.perf_counter()
    with torch.inference_mode():
        result = fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--backend", default=None, help="aura_tl.backends name (default: the installed default)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=20)
    parser.add_argument("--context", type=int, default=2048)
    parser.add_argument("--intervention", type=Path, help="a saved intervention to apply instead of the default "
                        "(learned once per backend and cached: ~42 min on 2 CPU cores the first time)")
    parser.add_argument("--bandwidth-gbs", type=float, default=4800.0, help="GPU memory bandwidth (H200: 4,800)")
    args = parser.parse_args()

    model = load_model(args.model, device=args.device, backend=args.backend)
    hf, _ = load_hf(args.model, device=args.device)
    tokenizer = hf_tokenizer(model)
    pad = pad_token_id(tokenizer)
    if args.intervention:
        intervention = Intervention.load(args.intervention)
    else:
        options = get_method(DEFAULT_METHOD).options()
        intervention = learn_cached(model, DEFAULT_METHOD, options, progress=False).intervention
    encoded = [tokenizer(p)["input_ids"] for p in prompts(args.prompts)]
    ids, mask = left_pad(encoded, pad, args.device)
    sampled = SamplingConfig(max_new_tokens=args.new_tokens, do_sample=True, top_p=0.9, seed=0)
    greedy = SamplingConfig(max_new_tokens=args.new_tokens)
    long = torch.randint(0, hf.config.vocab_size, (4, min(args.context, model.cfg.n_ctx)),
                         generator=torch.Generator().manual_seed(0)).to(args.device)
    hf_kwargs = {"pad_token_id": pad, "max_new_tokens": args.new_tokens, "min_new_tokens": args.new_tokens}

    def ours_sampled():
        with intervention.applied(model):
            return generate_ids(model, encoded, sampled)

    def ours_forward():
        with intervention.applied(model):
            return model(long)

    jobs = {
        "sampled": (ours_sampled, lambda: hf.generate(input_ids=ids, attention_mask=mask, do_sample=True, top_p=0.9,
                                                      top_k=0, temperature=1.0, **hf_kwargs)),
        "forward": (ours_forward, lambda: hf(long).logits),
        "greedy": (lambda: generate_ids(model, encoded[:32], greedy, eos_token_ids=[tokenizer.eos_token_id]),
                   lambda: hf.generate(input_ids=ids[:32], attention_mask=mask[:32], do_sample=False, pad_token_id=pad,
                                       max_new_tokens=args.new_tokens)),
    }
    times = {job: {"ours": [], "hf": []} for job in jobs}
    outputs = {}
    for _ in range(args.rounds):
        for job, (ours, theirs) in jobs.items():
            for who, fn in (("ours", ours), ("hf", theirs)):
                seconds, outputs[job, who] = clock(fn, args.device)
                times[job][who].append(seconds)

    hf_greedy = [until_eos(row, tokenizer.eos_token_id) for row in outputs["greedy", "hf"][:, ids.shape[1]:].tolist()]
    same_greedy = outputs["greedy", "ours"] == hf_greedy
    reproducible = ours_sampled() == ours_sampled()
    print(f"{args.model} on {model.__class__.__name__}, {environment()}, {args.rounds} rounds (median seconds)")
    print(f"intervention: {intervention.method}, lambda {intervention.strength:g}, {len(intervention.hook_names)} "
          f"hooks{', gated' if intervention.gated else ''}")
    print("| job | ours | HF | ours / HF | target | ours new tok/s |\n|---|---|---|---|---|---|")
    targets = {"sampled": "<= 1.1x", "forward": "<= 1.1x", "greedy": "-"}
    rows = {"sampled": args.prompts, "greedy": 32}
    for job in jobs:
        ours, theirs = statistics.median(times[job]["ours"]), statistics.median(times[job]["hf"])
        rate = f"{rows[job] * args.new_tokens / ours:.0f}" if job in rows else "-"
        print(f"| {job} | {ours:.2f} | {theirs:.2f} | {ours / theirs:.2f}x | {targets[job]} | {rate} |")
    print(f"greedy tokens identical to HF: {same_greedy}; sampled tokens reproducible by seed: {reproducible}")
    if args.device.startswith("cuda"):
        weight_bytes = sum(p.numel() * p.element_size() for p in hf.parameters())
        bound = args.bandwidth_gbs * 1e9 / weight_bytes * args.prompts  # every weight read once per step
        print(f"memory-bandwidth bound at batch {args.prompts}: {bound:.0f} new tok/s "
              f"({weight_bytes / 2**20:.0f} MiB of weights, {args.bandwidth_gbs:g} GB/s)")


if __name__ == "__main__":
    main()
