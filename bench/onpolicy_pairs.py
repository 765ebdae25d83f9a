"""Concept data from on-policy continuations, matched by prompt: each continuation an `aura-tl onpolicy` file labels
toxic, and beside it a non-toxic continuation of the same prompt (another prompt's, at random, when that prompt
has too few), each as prompt + continuation. Both sides then share their prompts, so what separates them is the
continuation: learn with `pooling=mean_last:K` to read mostly its tokens.

    python bench/onpolicy_pairs.py out/onpolicy_learn10.jsonl out/onpolicy_pairs.jsonl
    python bench/report.py ... --learn "onp=linact:data=out/onpolicy_pairs.jsonl;pooling=mean_last:16;gate=false"
"""

from __future__ import annotations

import argparse
import json
import random
from collections import defaultdict
from pathlib import Path

from aura_tl.onpolicy import joined, read_onpolicy


def matched_pairs(rows: list[dict], seed: int = 0) -> list[dict]:
    """{text, label} rows: every toxic continuation, then a non-toxic one of the same prompt (unused ones first;
    else one of a prompt with no toxic continuation), in the file's prompt order."""
    by_prompt: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        if row["text"].strip():
            by_prompt[row["prompt"]].append(row)
    rng = random.Random(seed)
    spare = [r for rs in by_prompt.values() if not any(int(x["label"]) for x in rs) for r in rs]
    rng.shuffle(spare)
    out = []
    for prompt, group in by_prompt.items():
        toxic = [r for r in group if int(r["label"]) == 1]
        clean = [r for r in group if int(r["label"]) == 0]
        rng.shuffle(clean)
        for i, row in enumerate(toxic):
            if i >= len(clean) and not spare:
                raise ValueError("too few non-toxic continuations to match every toxic one")
            other = clean[i] if i < len(clean) else spare.pop()
            out += [{"text": joined(prompt, row["text"]), "label": 1},
                    {"text": joined(other["prompt"], other["text"]), "label": 0}]
    return out


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
