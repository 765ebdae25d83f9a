"""Throughput of `collect_responses` (hooks + pooling inside them, all 30 `hook_post` of SmolLM2-135M) against a
bare forward pass over exactly the same batches, and the peak RSS of each, in one run.

The bare forward is `model(tokens, attention_mask=..., return_type=None)`: the same blocks without hooks (and, like
`collect_responses`, without the unembedding). Target: collect tokens/s >= 0.95 x bare.

    python bench/collect.py [--n 1024] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import time

import torch

from bench.common import environment, peak_rss
from aura_tl import collect_responses, load_concept_data, load_model
from aura_tl.models import hf_tokenizer, pad_token_id
from aura_tl.paths import shared_data_dir
from aura_tl.responses import length_batches, make_batch, tokenize


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    shared = shared_data_dir()
    source = shared / "davidson" / "labeled_data.csv" if shared else "embedded"
    data = load_concept_data(source, max_per_class=args.n // 2)
    model = load_model("smollm2-135m", device="cuda" if torch.cuda.is_available() else "cpu")
    ids, content, _ = tokenize(model, data.texts)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    pad = pad_token_id(hf_tokenizer(model))
    ranges = length_batches([len(ids[i]) for i in order], args.batch_size, args.batch_size * 128)  # as collect does
    batches = [make_batch([ids[i] for i in order[a:b]], [content[i] for i in order[a:b]], pad, model.cfg.device)
               for a, b in ranges]
    tokens = sum(int(b.attention_mask.sum()) for b in batches)

    def bare():
        with torch.inference_mode():
            for b in batches:
                model(b.tokens, attention_mask=b.attention_mask, return_type=None)

    def collect():
        collect_responses(model, data.texts, data.labels, batch_size=args.batch_size, progress=False)

    bare(), collect()  # warm-up
    times, memory = {"bare": [], "collect": []}, {}
    for _ in range(args.repeats):  # interleaved, best of N
        for name, fn in (("bare", bare), ("collect", collect)):
            with peak_rss(memory, name):
                started = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - started)
    print(f"data: {len(data)} sentences from {data.source}, {tokens} tokens, batch {args.batch_size}")
    print(f"env: {environment()}")
    for name in ("bare", "collect"):
        best = min(times[name])
        print(f"{name:8}: {tokens / best:9.0f} tokens/s  (best of {args.repeats}: {best:.2f} s)  "
              f"peak RSS +{memory[name]:.0f} MiB")
    print(f"ratio collect/bare: {min(times['bare']) / min(times['collect']):.3f}   (target >= 0.95)")
    print(f"pooled result: {len(data)} x 46080 float32 = {len(data) * 46080 * 4 / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
