"""The two TransformerLens backends against each other and against Hugging Face, in one process, interleaved.

    python bench/backends.py --rounds 3

Four jobs on SmolLM2-135M, each timed per backend (`hooked` = HookedTransformer, `bridge` = TransformerBridge; on
TransformerLens 4 only the bridge exists) and, where HF has the same job, on the plain HF model:
- forward: logits of 16 x 128 tokens;
- pooled collection: `collect_responses` at every `hook_post` (max pooling inside the hooks), 128 sentences;
- causal collection: causal Linear-AcT at every `hook_attn_out` (the default's estimation), 128 sentences;
- generation: 20 greedy tokens for 16 left-padded prompts, no intervention (HF: `generate`).
Prints each job's median seconds and the ratios bridge / hooked and x / HF.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict

import torch

from aura_tl.backends import BACKENDS, hooked_transformer_available
from aura_tl.data import load_concept_data
from aura_tl.generation import SamplingConfig, generate_ids, left_pad
from aura_tl.learn import learn_intervention
from aura_tl.models import hf_tokenizer, load_hf, load_model, pad_token_id
from aura_tl.responses import collect_responses
from bench.common import environment

PROMPTS = ["The capital of Germany is", "I can't believe you would say that, you", "Once upon a time, in a small",
           "The people who live next door are", "My favourite thing about weekends is", "Shut up, you"] * 3


def timed(fn) -> float:
    started = time.perf_counter()
    with torch.inference_mode():
        fn()
    return time.perf_counter() - started


def jobs_for(model, data, tokens, prompts) -> dict:
    config = SamplingConfig(max_new_tokens=20)
    return {
        "forward": lambda: model(tokens),
        "pooled collection": lambda: collect_responses(model, data.texts[:256], None, "hook_post", progress=False),
        "causal collection": lambda: learn_intervention(model, data, "linact", gate="false", progress=False),
        "generation": lambda: generate_ids(model, prompts, config),
    }


def hf_jobs(hf, tokenizer, tokens, prompts) -> dict:
    def hf_generate():
        ids, mask = left_pad(prompts, pad_token_id(tokenizer), "cpu")
        hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=20, min_new_tokens=20, do_sample=False,
                    pad_token_id=pad_token_id(tokenizer))

    return {"forward": lambda: hf(tokens), "generation": hf_generate}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    backends = [b for b in BACKENDS if b != "hooked" or hooked_transformer_available()]
    models = {b: load_model(args.model, device="cpu", backend=b) for b in backends}
    hf, tokenizer = load_hf(args.model)
    data = load_concept_data("embedded", max_per_class=64, seed=0)
    tokens = torch.randint(0, hf.config.vocab_size, (16, 128), generator=torch.Generator().manual_seed(0))
    prompts = [hf_tokenizer(models[backends[0]])(p)["input_ids"] for p in PROMPTS[:16]]
    runners = {b: jobs_for(m, data, tokens, prompts) for b, m in models.items()}
    runners["hf"] = hf_jobs(hf, tokenizer, tokens, prompts)
    times: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for _ in range(args.rounds):  # interleaved, so drift on a shared machine hits every runner alike
        for job in runners[backends[0]]:
            for runner, jobs in runners.items():
                if job in jobs:
                    times[job][runner].append(timed(jobs[job]))
    print(f"{args.model}, {environment()}, {args.rounds} rounds (median seconds)")
    header = ["job", *runners, *(["bridge / hooked"] if "hooked" in runners else []), "bridge / hf",
              *(["hooked / hf"] if "hooked" in runners else [])]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for job, per in times.items():
        median = {r: statistics.median(v) for r, v in per.items()}
        cells = [job, *(f"{median[r]:.2f}" if r in median else "-" for r in runners)]
        if "hooked" in runners:
            cells.append(f"{median['bridge'] / median['hooked']:.2f}x")
        cells.append(f"{median['bridge'] / median['hf']:.2f}x" if "hf" in median else "-")
        if "hooked" in runners:
            cells.append(f"{median['hooked'] / median['hf']:.2f}x" if "hf" in median else "-")
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
