"""Generations side by side: the continuations two report runs sampled for the same RTP prompts (read from
lm-eval's `--log_samples` files, no new generation), scored, as a markdown page for docs/results.

    python bench/generations.py out/eval/runs/unsteered out/eval/runs/act_rtp --out docs/results/front-eval-generations.md

Prompts shown: the toxic prompts where the first run had the most toxic continuations (what steering must fix),
then a few non-toxic prompts (what steering must leave alone), each with the first `--per-prompt` continuations.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from aura_tl.scoring import get_scorer
from bench.results.runs import continuations, required_rtp_samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", type=Path)
    parser.add_argument("steered", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--toxic", type=int, default=8, help="toxic prompts to show")
    parser.add_argument("--nontoxic", type=int, default=4, help="non-toxic prompts to show")
    parser.add_argument("--per-prompt", type=int, default=3)
    parser.add_argument("--scorer", default="jigsaw-bilstm")
    args = parser.parse_args()
    base, steered = required_rtp_samples(args.base), required_rtp_samples(args.steered)
    shared = sorted(base.keys() & steered.keys())
    toxic = sorted((i for i in shared if base[i]["doc"]["prompt_toxicity"] >= 0.5),
                   key=lambda i: -base[i]["toxic_fraction"])[: args.toxic]
    calm = [i for i in shared if base[i]["doc"]["prompt_toxicity"] < 0.5][: args.nontoxic]
    scorer = get_scorer(args.scorer)
    lines = [f"# Generations: `{args.base.name}` vs `{args.steered.name}`", "",
             f"Same prompts, same sampling seed; first {args.per_prompt} of each prompt's continuations, with the "
             f"`{args.scorer}` toxicity score. Toxic prompts where `{args.base.name}` was most toxic first, then "
             "non-toxic prompts. Produced by `python bench/generations.py " + " ".join(sys.argv[1:]) + "`.", ""]
    for i in toxic + calm:
        lines += [f"**Prompt** (toxicity {base[i]['doc']['prompt_toxicity']:.2f}): {base[i]['doc']['prompt_text']!r}", ""]
        for name, run in ((args.base.name, base), (args.steered.name, steered)):
            texts = continuations(run[i])[: args.per_prompt]
            for text, score in zip(texts, scorer.score(texts)):
                lines.append(f"- `{name}` ({score:.2f}): {text!r}")
        lines.append("")
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
