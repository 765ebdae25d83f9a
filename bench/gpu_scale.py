"""Pure speed at scale on a randomly initialised gpt2-xl-shaped HookedTransformer (48 layers, d_model 1600, d_mlp
6400): time to collect max-pooled `hook_post` responses for N sentences, AUROC over all 48 x 6,400 neurons, and
generation tokens/s with and without AurA hooks. Writes a JSON line of figures to stdout (and `--out`).

    python bench/gpu_scale.py --device cuda --sentences 10000          # the GPU figures in docs/results/
    python bench/gpu_scale.py --device cpu --sentences 64 --layers 4   # a small check on a CPU
"""

from __future__ import annotations

import argparse
import json
import random
import time
import warnings
from pathlib import Path

import torch

from bench.common import environment


def build(args):
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformers import AutoTokenizer

    from aura_tl.models import resolve_hf_folder

    tokenizer = AutoTokenizer.from_pretrained(str(resolve_hf_folder("smollm2-135m")))  # any real tokenizer will do
    cfg = HookedTransformerConfig(
        n_layers=args.layers, d_model=1600, n_heads=25, d_head=64, d_mlp=6400, d_vocab=tokenizer.vocab_size,
        n_ctx=1024, act_fn="gelu_new", normalization_type="LN", model_name="random-gpt2-xl-shape",
        device=args.device, dtype=getattr(torch, args.dtype), seed=0, default_prepend_bos=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        model = HookedTransformer(cfg, tokenizer=tokenizer)
    model._aura_tl_hf_tokenizer = tokenizer
    return model.eval()


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--sentences", type=int, default=10000)
    parser.add_argument("--layers", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--gen-prompts", type=int, default=64)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    from aura_tl import collect_responses
    from aura_tl.auroc import auroc
    from aura_tl.embedded_data import embedded_concept_set
    from aura_tl.generation import SamplingConfig, generate
    from aura_tl.learn import aura_alphas
    from aura_tl.intervention import Intervention
    from aura_tl.models import ModelShape

    model = build(args)
    base, labels = embedded_concept_set()
    rng = random.Random(0)
    texts = [f"{base[i % len(base)]} {rng.choice(base)}" for i in range(args.sentences)]  # ~25-40 tokens each
    labels = [labels[i % len(labels)] for i in range(args.sentences)]
    collect_responses(model, texts[:64], labels[:64], batch_size=args.batch_size, progress=False)  # warm-up
    sync(args.device)
    started = time.perf_counter()
    responses = collect_responses(model, texts, labels, batch_size=args.batch_size, progress=False,
                                  out_device=args.device)
    sync(args.device)
    collect_s = time.perf_counter() - started
    scores = torch.cat(list(responses.pooled.values()), dim=1)
    started = time.perf_counter()
    aurocs = auroc(scores, responses.labels.to(scores.device))
    sync(args.device)
    auroc_s = time.perf_counter() - started
    sizes = [v.shape[1] for v in responses.pooled.values()]
    alphas = dict(zip(responses.pooled, aura_alphas(aurocs.cpu()).split(sizes)))
    iv = Intervention("aura", alphas, ModelShape.of(model))
    prompts = texts[: args.gen_prompts]
    config = SamplingConfig(max_new_tokens=32)
    generate(model, prompts[:8], config)
    speeds = {}
    for name in ("plain", "aura"):
        sync(args.device)
        started = time.perf_counter()
        if name == "plain":
            generate(model, prompts, config, batch_size=args.gen_prompts, stop_at_eos=False)
        else:
            with iv.applied(model):
                generate(model, prompts, config, batch_size=args.gen_prompts, stop_at_eos=False)
        sync(args.device)
        speeds[name] = len(prompts) * config.max_new_tokens / (time.perf_counter() - started)
    figures = {
        "env": environment(), "device": args.device, "dtype": args.dtype, "layers": args.layers,
        "neurons": scores.shape[1], "sentences": args.sentences, "collect_s": round(collect_s, 2),
        "collect_sentences_per_s": round(args.sentences / collect_s, 1), "auroc_s": round(auroc_s, 3),
        "generate_tokens_per_s": {k: round(v, 1) for k, v in speeds.items()},
        "aura_generation_overhead_pct": round(100 * (speeds["plain"] / speeds["aura"] - 1), 2),
    }
    print(json.dumps(figures))
    if args.out:
        args.out.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
