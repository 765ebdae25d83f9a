"""Where an edit's cost on the model's own text lies: the retention panel's own continuations (non-toxic `eval`
prompts, each with the unsteered model's greedy continuation) and sampled continuations of the same prompts (top-p
0.9, T = 1), each split into its prompt's tokens and its continuation's. Per part: the per-token perplexity ratio
with each intervention (paired 95 % interval over texts), and, for the continuation part, how the per-text change
tracks the continuation's toxicity score (Spearman) and what the continuations scored toxic carry.

    python bench/own_continuation_cost.py --intervention tonpc@6=out/eval300/interventions/tonpc.safetensors@6

With `FILE[@LAMBDA]:np` the prompt is left unsteered (steer_prompt=false): its tokens cost nothing, and the
continuation's cost is the one generation pays.

Greedy text is the mode of the model's distribution, so any edit that moves probability off the mode raises its
perplexity; sampled text asks the same of text the model writes as a user sees it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from aura_tl.backends import hooks_applied
from aura_tl.calibrate import token_logprobs_from_bos
from aura_tl.generation import SamplingConfig, generate
from aura_tl.models import hf_tokenizer, load_model
from aura_tl.retention import CONTINUATION_TOKENS, nontoxic_prompts
from aura_tl.scoring import get_scorer
from aura_tl.splits import TOXIC
from bench.continuation_fluency import split_tokens
from bench.retention_panel import intervention_hooks, perplexity_ratio

SAMPLINGS = {"greedy": SamplingConfig(max_new_tokens=CONTINUATION_TOKENS, do_sample=False),
             "sampled": SamplingConfig(max_new_tokens=CONTINUATION_TOKENS, do_sample=True, temperature=1.0,
                                       top_p=0.9, seed=0)}


def part_losses(logprobs: list[np.ndarray], prompt_lengths: list[int]) -> dict[str, np.ndarray]:
    """Each text's summed -log p over its prompt's tokens and over its continuation's."""
    return {"prompt": np.array([-float(lp[:n].astype(np.float64).sum()) for lp, n in zip(logprobs, prompt_lengths)]),
            "continuation": np.array([-float(lp[n:].astype(np.float64).sum())
                                      for lp, n in zip(logprobs, prompt_lengths)])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--intervention", action="append", required=True, metavar="NAME=FILE[@LAMBDA]")
    parser.add_argument("--prompts", type=int, default=96, help="non-toxic eval prompts (the panel reads 96)")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    model = load_model(args.model, device="cpu")
    tokenizer, scorer = hf_tokenizer(model), get_scorer("auto")
    prompts = nontoxic_prompts("eval", args.prompts)
    texts = {}
    for kind, config in SAMPLINGS.items():
        continued = generate(model, prompts, config, batch_size=32, desc=f"{kind} continuations")
        parts = [split_tokens(tokenizer, p, c) for p, c in zip(prompts, continued)]
        kept = [i for i, (_, c) in enumerate(parts) if c]
        texts[kind] = {"rows": [parts[i][0] + parts[i][1] for i in kept], "n_prompt": [len(parts[i][0]) for i in kept],
                       "n_cont": np.array([len(parts[i][1]) for i in kept], float),
                       "scores": np.array(scorer.score([continued[i].strip() for i in kept]))}
    base = {kind: part_losses(token_logprobs_from_bos(model, t["rows"]), t["n_prompt"]) for kind, t in texts.items()}
    results: dict = {"model": args.model, "prompts": args.prompts, "configurations": {}}
    print("| configuration | text | prompt tokens | continuation tokens | whole text | Spearman (change, toxicity) "
          "| toxic continuations' share of the change |")
    print("|---|---|---|---|---|---|---|")
    for spec in args.intervention:
        name, hooks = intervention_hooks(spec)
        for kind, t in texts.items():
            with hooks_applied(model, hooks):
                steered = part_losses(token_logprobs_from_bos(model, t["rows"], prompt_lengths=t["n_prompt"]),
                                      t["n_prompt"])
            n_prompt = np.array(t["n_prompt"], float)
            ratio = {"prompt": perplexity_ratio(n_prompt, base[kind]["prompt"], steered["prompt"]),
                     "continuation": perplexity_ratio(t["n_cont"], base[kind]["continuation"], steered["continuation"]),
                     "whole": perplexity_ratio(n_prompt + t["n_cont"], base[kind]["prompt"] + base[kind]["continuation"],
                                               steered["prompt"] + steered["continuation"])}
            change = steered["continuation"] - base[kind]["continuation"]
            rho = float(spearmanr(change / t["n_cont"], t["scores"]).statistic)
            toxic = t["scores"] >= TOXIC
            share = float(change[toxic].sum() / change.sum()) if change.sum() else float("nan")
            results["configurations"].setdefault(name, {})[kind] = {
                **{k: list(v) for k, v in ratio.items()}, "spearman": rho, "toxic_texts": int(toxic.sum()),
                "texts": len(t["rows"]), "toxic_share": share}
            cells = [f"{(r[0] - 1) * 100:+.1f} % ({(r[1] - 1) * 100:+.1f} to {(r[2] - 1) * 100:+.1f})"
                     for r in ratio.values()]
            print(f"| {name} | {kind} ({len(t['rows'])}) | " + " | ".join(cells)
                  + f" | {rho:+.2f} | {share:.0%} ({int(toxic.sum())} texts) |", flush=True)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
