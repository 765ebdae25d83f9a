"""Do steered continuations still follow from their prompts? Each run's sampled RTP continuations scored by the
unsteered model: per-token perplexity of the continuation given the prompt (the fluency measure of the
detoxification papers, here with the model itself as judge), paired with unsteered over prompts.

    python bench/continuation_fluency.py out/eval/runs/unsteered out/eval/runs/act_rtp out/eval/runs/act_gx2

A method that detoxifies by derailing writes continuations the unsteered model finds unlikely after the prompt.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from aura_tl.models import hf_tokenizer, load_model
from bench.results.paired import paired_bootstrap
from bench.results.runs import continuations, required_rtp_samples


def continuation_nll(model, pairs: list[tuple[str, str]], batch_size: int = 32) -> np.ndarray:
    """Mean negative log-likelihood per continuation token of each (prompt, continuation), unsteered."""
    tokenizer = hf_tokenizer(model)
    out = np.zeros(len(pairs))
    for start in tqdm(range(0, len(pairs), batch_size), desc="scoring continuations", leave=False):
        chunk = pairs[start:start + batch_size]
        prompts = [tokenizer(p, add_special_tokens=False)["input_ids"] for p, _ in chunk]
        fulls = [tokenizer(p + c, add_special_tokens=False)["input_ids"] for p, c in chunk]
        width = max(len(f) for f in fulls)
        tokens = torch.zeros(len(chunk), width, dtype=torch.long)
        mask = torch.zeros(len(chunk), width, dtype=torch.long)
        for i, f in enumerate(fulls):
            tokens[i, :len(f)], mask[i, :len(f)] = torch.tensor(f), 1
        with torch.inference_mode():
            logits = model(tokens, attention_mask=mask)[:, :-1]
            # log p(next token) without a second vocabulary-sized tensor: its logit minus the log normaliser
            picked = logits.gather(-1, tokens[:, 1:, None])[..., 0] - logits.logsumexp(-1)
        for i, (p, f) in enumerate(zip(prompts, fulls)):
            first = max(len(p), 1)  # the continuation's tokens (the joint tokenisation keeps the prompt's prefix)
            span = picked[i, first - 1:len(f) - 1]
            out[start + i] = float(-span.mean()) if len(span) else np.nan
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", type=Path, help="the unsteered run")
    parser.add_argument("steered", type=Path, nargs="+")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--per-prompt", type=int, default=5, help="continuations scored per prompt")
    args = parser.parse_args()
    model = load_model(args.model, device="cpu")
    runs = [args.base, *args.steered]
    logs = [required_rtp_samples(r) for r in runs]
    shared = sorted(set.intersection(*(set(log) for log in logs)))
    per_prompt = {}
    for run, log in zip(runs, logs):
        pairs = [(log[i]["arguments"]["gen_args_0"]["arg_0"], c) for i in shared
                 for c in continuations(log[i])[:args.per_prompt]]
        nll = continuation_nll(model, pairs).reshape(len(shared), -1)
        per_prompt[run.name] = np.nanmean(nll, axis=1)
    base = per_prompt[args.base.name]
    print(f"{len(shared)} prompts x {args.per_prompt} continuations, scored by unsteered {args.model}\n")
    print("| configuration | continuation ppl given the prompt | ratio to unsteered (paired 95 % CI) |")
    print("|---|---|---|")
    for name, nll in per_prompt.items():
        ppl = float(np.exp(nll.mean()))
        if name == args.base.name:
            print(f"| {name} | {ppl:.1f} | - |")
            continue
        ratio, lo, hi = paired_bootstrap(base, nll, lambda b, o: np.exp(o.mean(-1) - b.mean(-1)))
        print(f"| {name} | {ppl:.1f} | {ratio:.2f}x ({lo:.2f}-{hi:.2f}) |")


if __name__ == "__main__":
    main()
