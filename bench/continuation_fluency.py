"""Do steered continuations still follow from their prompts? Each run's sampled RTP continuations scored by the
unsteered model, paired with unsteered over prompts:

- fluency: per-token perplexity of the continuation given the prompt (the detoxification papers' fluency measure,
  here with the model itself as judge);
- relevance: the unsteered model's pointwise mutual information between prompt and continuation, per continuation
  token, log p(continuation | prompt) - log p(continuation), the same continuation tokens read after BOS alone.
  A fluent continuation that changes the subject ("Shut up, you" -> a Python decorator) is likely on its own
  and scores near 0; one that follows its prompt scores high. Reported as a ratio to unsteered's, on all prompts
  and on toxic / non-toxic prompts apart.

`--nontoxic-reference` adds the base run's own non-toxic continuations (scored below the toxic line, the first
`--per-prompt` of each prompt's samples) as a row: what relevance perfect rejection sampling would keep, the
ceiling for a detoxification that drops the insult and keeps the subject.

    python bench/continuation_fluency.py out/eval/runs/unsteered out/eval/runs/act_rtp out/eval/runs/act_gx2

Every sequence starts at BOS (some models, Gemma among them, read text without it badly).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from jaxtyping import Float

from aura_tl.calibrate import token_logprobs_from_bos
from aura_tl.models import hf_tokenizer, load_model
from aura_tl.scoring import get_scorer
from aura_tl.splits import TOXIC
from bench.results.paired import paired_bootstrap
from bench.results.runs import continuations, required_rtp_samples


def split_tokens(tokenizer, prompt: str, continuation: str) -> tuple[list[int], list[int]]:
    """(prompt ids, continuation ids) of the joint tokenisation of prompt + continuation, split where the prompt's
    own tokens stop matching (a token merged across the boundary counts as continuation)."""
    alone = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    joint = tokenizer(prompt + continuation, add_special_tokens=False)["input_ids"]
    first = 0
    while first < min(len(alone), len(joint)) and alone[first] == joint[first]:
        first += 1
    return joint[:first], joint[first:]


def continuation_scores(model, pairs: list[tuple[str, str]], batch_size: int = 32
                        ) -> tuple[Float[np.ndarray, "pairs"], Float[np.ndarray, "pairs"]]:
    """(mean NLL per continuation token given BOS + prompt, mean PMI per continuation token) of each (prompt,
    continuation), unsteered; NaN where a continuation has no tokens."""
    tokenizer = hf_tokenizer(model)
    split = [split_tokens(tokenizer, p, c) for p, c in pairs]
    kept = [i for i, (_, cont) in enumerate(split) if cont]
    given = token_logprobs_from_bos(model, [split[i][0] + split[i][1] for i in kept], batch_size, progress=True)
    alone = token_logprobs_from_bos(model, [split[i][1] for i in kept], batch_size, progress=True)
    nll, pmi = np.full(len(pairs), np.nan), np.full(len(pairs), np.nan)
    for i, with_prompt, without in zip(kept, given, alone):
        span = with_prompt[len(split[i][0]):]
        nll[i], pmi[i] = -float(span.mean()), float((span - without).mean())
    return nll, pmi


def per_prompt_scores(model, prompts: list[str], texts: list[list[str]]
                      ) -> tuple[Float[np.ndarray, "prompts"], Float[np.ndarray, "prompts"]]:
    """(mean NLL, mean PMI) over each prompt's continuations; NaN for a prompt with none."""
    nll, pmi = continuation_scores(model, [(prompt, c) for prompt, conts in zip(prompts, texts) for c in conts])
    bounds = np.cumsum([len(conts) for conts in texts])[:-1]
    means = [[np.nanmean(part) if part.size else np.nan for part in np.split(scores, bounds)] for scores in (nll, pmi)]
    return np.array(means[0]), np.array(means[1])


def nontoxic_only(texts: list[list[str]], scorer: str, per_prompt: int) -> list[list[str]]:
    """Each prompt's first `per_prompt` continuations the scorer puts below the toxic line."""
    flat = [c for conts in texts for c in conts]
    scores = iter(get_scorer(scorer).score(flat))
    return [[c for c, s in zip(conts, scores) if s < TOXIC][:per_prompt] for conts in texts]


def print_table(title: str, base: str, fluency: dict[str, np.ndarray], relevance: dict[str, np.ndarray]) -> None:
    """Fluency and relevance per configuration, each paired with `base` over the prompts given."""
    print(f"\n{title}\n")
    print("| configuration | continuation ppl given the prompt | ratio to unsteered (paired 95 % CI) "
          "| relevance: PMI per token (nats) | relevance / unsteered's (paired 95 % CI) |")
    print("|---|---|---|---|---|")
    for name in fluency:
        ppl, pmi = float(np.exp(fluency[name].mean())), float(relevance[name].mean())
        if name == base:
            print(f"| {name} | {ppl:.1f} | - | {pmi:.2f} | - |")
            continue
        ratio = paired_bootstrap(fluency[base], fluency[name], lambda b, o: np.exp(o.mean(-1) - b.mean(-1)))
        kept = paired_bootstrap(relevance[base], relevance[name], lambda b, o: o.mean(-1) / b.mean(-1))
        print(f"| {name} | {ppl:.1f} | {ratio[0]:.2f}x ({ratio[1]:.2f}-{ratio[2]:.2f}) | {pmi:.2f} "
              f"| {kept[0]:.0%} ({kept[1]:.0%}-{kept[2]:.0%}) |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", type=Path, help="the unsteered run")
    parser.add_argument("steered", type=Path, nargs="+")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--per-prompt", type=int, default=5, help="continuations scored per prompt")
    parser.add_argument("--nontoxic-reference", action="store_true",
                        help="add the base run's non-toxic continuations as a row (the rejection-sampling ceiling)")
    parser.add_argument("--scorer", default="jigsaw-bilstm", help="toxicity scorer for --nontoxic-reference")
    args = parser.parse_args()
    model = load_model(args.model, device="cpu")
    runs = [args.base, *args.steered]
    logs = [required_rtp_samples(r) for r in runs]
    shared = sorted(set.intersection(*(set(log) for log in logs)))
    prompts = [logs[0][i]["arguments"]["gen_args_0"]["arg_0"] for i in shared]
    texts = {run.name: [continuations(log[i])[:args.per_prompt] for i in shared] for run, log in zip(runs, logs)}
    if args.nontoxic_reference:
        texts[f"{args.base.name}, non-toxic samples only"] = nontoxic_only(
            [continuations(logs[0][i]) for i in shared], args.scorer, args.per_prompt)
    fluency, relevance = {}, {}
    for name, conts in texts.items():
        fluency[name], relevance[name] = per_prompt_scores(model, prompts, conts)
    scored = np.all([np.isfinite(v) for v in relevance.values()], axis=0)
    toxic_prompt = np.array([logs[0][i]["doc"]["prompt_toxicity"] >= TOXIC for i in shared])
    print(f"{len(shared)} prompts x {args.per_prompt} continuations, scored by unsteered {args.model}; "
          f"{int((~scored).sum())} prompts without a scored continuation in some row left out")
    for title, keep in (("All prompts", scored), (f"Toxic prompts (toxicity >= {TOXIC})", scored & toxic_prompt),
                        (f"Non-toxic prompts (toxicity < {TOXIC})", scored & ~toxic_prompt)):
        print_table(f"{title}: {int(keep.sum())}", args.base.name,
                    {k: v[keep] for k, v in fluency.items()}, {k: v[keep] for k, v in relevance.items()})


if __name__ == "__main__":
    main()
