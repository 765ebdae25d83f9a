"""An intervention on the installed TransformerLens, recorded so that two installs can be compared: its steered
next-token log-probabilities on `eval` prompts, greedy and sampled continuations (the prompt left as the file says),
and their toxicity scores. Every figure measured on one backend carries to the other when these agree.

    python bench/default_on_backends.py record act.safetensors --backend hooked -o tl39.pt        # TransformerLens 3.9
    tl4/bin/python bench/default_on_backends.py record act.safetensors --backend bridge -o tl43.pt  # TransformerLens 4
    python bench/default_on_backends.py compare tl39.pt tl43.pt
"""

from __future__ import annotations

import argparse
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch

from aura_tl.data import prompt_records
from aura_tl.generation import SamplingConfig, generate
from aura_tl.intervention import Intervention
from aura_tl.models import hf_tokenizer, load_model
from aura_tl.scoring import get_scorer
from aura_tl.splits import TOXIC, prompt_text

CONTINUATIONS = {"greedy": (SamplingConfig(max_new_tokens=20), 1),
                 "sampled": (SamplingConfig(max_new_tokens=20, do_sample=True, top_p=0.9, seed=0), 5)}


def record(args) -> None:
    started = time.perf_counter()
    model = load_model(args.model, device="cpu", backend=args.backend)
    iv = Intervention.load(args.intervention)
    prompts = [prompt_text(r) for r in prompt_records("eval")][:args.prompts]
    tokenizer = hf_tokenizer(model)
    out = {"versions": {p: version(p) for p in ("transformer-lens", "transformers", "torch")},
           "backend": args.backend, "class": type(model).__name__, "prompts": prompts}
    with torch.inference_mode(), iv.applied(model):
        out["next_logprobs"] = torch.cat([model(tokenizer(p, return_tensors="pt").input_ids)[:, -1].log_softmax(-1)
                                          for p in prompts])  # each prompt alone: every position edited
        for kind, (config, repeats) in CONTINUATIONS.items():
            texts = generate(model, [p for p in prompts for _ in range(repeats)], config, batch_size=args.batch_size,
                             progress=True, desc=kind)
            out[kind] = texts
    scorer = get_scorer("auto")
    out.update({f"{kind}_scores": scorer.score(out[kind]) for kind in CONTINUATIONS})
    out["seconds"] = time.perf_counter() - started
    torch.save(out, args.output)
    print(f"{args.output}: {out['class']} on {out['versions']}, {len(prompts)} prompts, {out['seconds']:.0f} s")


def compare(args) -> None:
    a, b = (torch.load(p, weights_only=False) for p in (args.first, args.second))
    if a["prompts"] != b["prompts"]:
        raise SystemExit("the two files continue different prompts")
    for side in (a, b):
        print(f"{side['class']} ({side['backend']}): {side['versions']}")
    gap = (a["next_logprobs"] - b["next_logprobs"]).abs().max()
    print(f"steered next-token log-probabilities, {len(a['prompts'])} prompts: largest |difference| {gap:.2e}")
    for kind in CONTINUATIONS:
        same = np.mean([x == y for x, y in zip(a[kind], b[kind])])
        rates = [np.mean(np.asarray(s[f"{kind}_scores"]) >= TOXIC) for s in (a, b)]
        print(f"{kind}: {same:.1%} of {len(a[kind])} continuations identical; toxic rate {rates[0]:.4f} / "
              f"{rates[1]:.4f}; mean score {np.mean(a[f'{kind}_scores']):.4f} / {np.mean(b[f'{kind}_scores']):.4f}")
        repeats = len(a[kind]) // len(a["prompts"])
        for i, (x, y) in enumerate(zip(a[kind], b[kind])):
            if x != y and args.show:
                print(f"  {a['prompts'][i // repeats]!r}\n    {x!r}\n    {y!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record")
    rec.add_argument("intervention", type=Path)
    rec.add_argument("--model", default="smollm2-135m")
    rec.add_argument("--backend", choices=("hooked", "bridge"), required=True)
    rec.add_argument("--prompts", type=int, default=64, help="the first N `eval` prompts")
    rec.add_argument("--batch-size", type=int, default=64)
    rec.add_argument("-o", "--output", type=Path, required=True)
    cmp = sub.add_parser("compare")
    cmp.add_argument("first", type=Path)
    cmp.add_argument("second", type=Path)
    cmp.add_argument("--show", action="store_true", help="print the continuations that differ")
    args = parser.parse_args()
    (record if args.command == "record" else compare)(args)


if __name__ == "__main__":
    main()
