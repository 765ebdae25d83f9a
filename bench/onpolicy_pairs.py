"""Concept data from on-policy continuations, matched by prompt: each continuation an `aura-tl onpolicy` file labels
toxic, and beside it a non-toxic continuation of the same prompt (another prompt's, at random, when that prompt
has too few), each as prompt + continuation. Both sides then share their prompts, so what separates them is the
continuation: learn with `pooling=mean_last:K` to read mostly its tokens.

    python bench/onpolicy_pairs.py out/onpolicy_learn10.jsonl out/onpolicy_pairs.jsonl
    python bench/report.py ... --learn "onp=linact:data=out/onpolicy_pairs.jsonl;pooling=mean_last:16;gate=false"

`aura-tl learn --data onpolicy-pairs:10` builds the same pairs itself (from its cached on-policy file).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from aura_tl.onpolicy import matched_pairs, read_onpolicy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("onpolicy", type=Path, help="an `aura-tl onpolicy` file")
    parser.add_argument("out", type=Path, help="the text,label JSONL to write")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    pairs = matched_pairs(read_onpolicy(args.onpolicy), args.seed)
    args.out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in pairs), encoding="utf-8")
    print(f"{len(pairs) // 2} toxic continuations, each beside a non-toxic one -> {args.out}")


if __name__ == "__main__":
    main()
