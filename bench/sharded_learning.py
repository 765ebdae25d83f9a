"""Sharded learning: `aura-tl learn` in 1 process vs under `torchrun --nproc_per_node N` (gloo on CPU), same data.

    python bench/sharded_learning.py --method aura --max-per-class 200 --procs 2 --rounds 2

Prints the learning seconds each run records in its intervention (`seconds.total`: data, response collection,
fit; model loading excluded), their medians, the ratio 1-process / N-process, and whether the tensors are equal.
On a 2-core machine the N processes share the cores that one process's intra-op threads already used, so expect a
ratio near 1; the gain is for N GPUs or N machines.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def learn(prefix: list[str], out: Path, args) -> float:
    command = [*prefix, "-m", "aura_tl.cli", "learn", "--model", args.model, "--method", args.method, "--data",
               args.data, "--max-per-class", str(args.max_per_class), "--device", "cpu", "-o", str(out)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(done.stderr[-3000:])
    from safetensors import safe_open

    with safe_open(str(out), framework="pt") as handle:
        return float(json.loads(handle.metadata()["metadata"])["seconds"]["total"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--method", default="aura")
    parser.add_argument("--data", default="embedded")
    parser.add_argument("--max-per-class", type=int, default=200)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    import torch
    from safetensors.torch import load_file

    runs = {"1 process": [sys.executable],
            f"{args.procs} processes": [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(args.procs)]}
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):  # interleaved, so drifting machine load hits both alike
            for name, prefix in runs.items():
                seconds[name].append(learn(prefix, Path(tmp) / f"{name[0]}.safetensors", args))
                print(f"round {round_ + 1} {name}: {seconds[name][-1]:.1f} s", flush=True)
        a, b = (load_file(str(Path(tmp) / f"{name[0]}.safetensors")) for name in runs)
        equal = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    medians = {name: statistics.median(v) for name, v in seconds.items()}
    one, many = medians.values()
    print(f"{args.method} on {args.data} ({args.max_per_class} per class), {args.model}: " +
          ", ".join(f"{k} {v:.1f} s" for k, v in medians.items()) +
          f"; speed-up {one / many:.2f}x; tensors equal: {equal}")


if __name__ == "__main__":
    main()
