"""AUROC of every neuron: aura-tl's vectorised version vs the ml-aura way (sklearn `roc_auc_score` on 10-column
chunks over a 2-process pool), on the same responses in one run.

Default data: SmolLM2-135M's max-pooled `hook_post` of all 30 layers (46,080 neurons) on 4,000 Davidson tweets
(2,000 per class; collected once and cached in --cache). `--synthetic` uses random data of the same shape instead.

    python bench/auroc.py                 # real responses (needs ../shared/data)
    python bench/auroc.py --synthetic
"""

from __future__ import annotations

import argparse
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from bench.common import environment
from aura_tl.auroc import auroc


def _sklearn_chunk(args):
    labels, block = args
    return [roc_auc_score(labels, block[:, j]) for j in range(block.shape[1])]


def ml_aura_way(scores: np.ndarray, labels: np.ndarray, chunk: int = 10, processes: int = 2) -> np.ndarray:
    tasks = [(labels, scores[:, i:i + chunk]) for i in range(0, scores.shape[1], chunk)]
    with Pool(processes) as pool:
        parts = pool.map(_sklearn_chunk, tasks, chunksize=16)
    return np.concatenate([np.asarray(p) for p in parts])


def real_responses(n_per_class: int, cache: Path) -> tuple[torch.Tensor, torch.Tensor]:
    from aura_tl import collect_responses, load_concept_data, load_model
    from aura_tl.paths import shared_data_dir
    from aura_tl.responses import Responses

    if cache.is_file():
        responses = Responses.load(cache)
    else:
        shared = shared_data_dir()
        if shared is None:
            raise SystemExit("no shared data: run with --synthetic or set AURA_SHARED_DATA")
        data = load_concept_data(shared / "davidson" / "labeled_data.csv", max_per_class=n_per_class)
        model = load_model("smollm2-135m", device="cpu")
        responses = collect_responses(model, data.texts, data.labels, batch_size=64, save_to=cache)
    scores = torch.cat([responses.pooled[k] for k in sorted(responses.pooled, key=lambda n: int(n.split(".")[1]))], 1)
    return scores, responses.labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synthetic", action="store_true")
    parser.add_argument("--n-per-class", type=int, default=2000)
    parser.add_argument("--neurons", type=int, default=46080, help="synthetic only")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/aura_tl_bench_responses.safetensors"))
    args = parser.parse_args()
    if args.synthetic:
        g = torch.Generator().manual_seed(0)
        scores = torch.randn(2 * args.n_per_class, args.neurons, generator=g)
        labels = torch.randint(0, 2, (2 * args.n_per_class,), generator=g)
    else:
        scores, labels = real_responses(args.n_per_class, args.cache)
    print(f"data: {tuple(scores.shape)} ({'synthetic' if args.synthetic else 'SmolLM2-135M hook_post, Davidson'})")
    print(f"env: {environment()}")
    started = time.perf_counter()
    ours = auroc(scores, labels).numpy()
    t_ours = time.perf_counter() - started
    started = time.perf_counter()
    ref = ml_aura_way(scores.numpy(), labels.numpy())
    t_ref = time.perf_counter() - started
    print(f"aura-tl vectorised : {t_ours:8.2f} s")
    print(f"sklearn, 2 procs   : {t_ref:8.2f} s")
    print(f"speed-up           : {t_ref / t_ours:8.1f} x   (target >= 5x)")
    print(f"max |difference|   : {np.abs(ours - ref).max():.2e}")
    print(f"experts (AUROC>0.5): {(ours > 0.5).sum()} of {ours.size}")


if __name__ == "__main__":
    main()
