"""Log-likelihood throughput of `aura-hooked` (no intervention, and AurA attached) against lm-eval's own `hf` model
on the same weights and the same requests (PIQA validation, both choices), in one run.

Targets: aura-hooked (none) >= 1.0 x hf; AurA hook overhead <= 3 % of aura-hooked (none).

    python bench/scoring_throughput.py [--docs 300] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import time
import warnings

from lm_eval.api.instance import Instance

from aura_tl.data import read_jsonl
from aura_tl.paths import shared_data_dir
from bench.common import environment


def requests(n_docs: int) -> list[Instance]:
    shared = shared_data_dir()
    if shared is None:
        raise SystemExit("needs ../shared/data (PIQA) or AURA_SHARED_DATA")
    docs = read_jsonl(shared / "piqa" / "validation_merged.jsonl")[:n_docs]
    return [Instance("loglikelihood", {}, (f"Question: {d['goal']}\nAnswer:", f" {d[s]}"), i)
            for i, d in enumerate(docs) for s in ("sol1", "sol2")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    from lm_eval.models.huggingface import HFLM

    from aura_tl.models import resolve_hf_folder
    from lm_eval_plugin.model import AuraHookedLM

    import torch

    reqs = requests(args.docs)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    models = {
        "hf": HFLM(pretrained=str(resolve_hf_folder("smollm2-135m")), batch_size=args.batch_size, dtype="float32",
                   device=device),
        "aura-hooked (none)": AuraHookedLM(batch_size=args.batch_size, device=device, method="none"),
        "aura-hooked (AurA)": AuraHookedLM(batch_size=args.batch_size, device=device, method="aura",
                                           max_per_class=200),
    }
    print(f"requests: {len(reqs)} PIQA loglikelihood requests, batch {args.batch_size}; env: {environment()}")
    best = {}
    for _ in range(args.repeats):  # interleaved, best of N
        for name, lm in models.items():
            started = time.perf_counter()
            lm.loglikelihood(reqs, disable_tqdm=True)
            best[name] = min(best.get(name, float("inf")), time.perf_counter() - started)
    for name, seconds in best.items():
        print(f"{name:20}: {len(reqs) / seconds:7.1f} requests/s  ({seconds:.2f} s)")
    print(f"aura-hooked (none) / hf speed: {best['hf'] / best['aura-hooked (none)']:.2f} x   (target >= 1.0)")
    overhead = best["aura-hooked (AurA)"] / best["aura-hooked (none)"] - 1
    print(f"AurA hook overhead: {100 * overhead:+.1f} %   (target <= 3 %)")


if __name__ == "__main__":
    main()
