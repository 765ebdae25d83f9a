"""The default intervention on each embedded model, screened against unsteered on the same prompts: what lambda the
default calibration chose, and toxicity (5 samples per prompt, the `calibrate` split, `jigsaw-bilstm`) with paired
bootstrap intervals. A screen, not the paper protocol (`bench/report.py` runs that).

    python -m bench.default_screen --models smollm2-135m gemma3-270m --prompts 40 --out out/default-screen
    python -m bench.default_screen ... --intervention gemma3-270m=g.safetensors   # a file already learned
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from pathlib import Path

from bench.results.paired import PAIRED_KEYS, paired_reduction
from bench.results.runs import required_rtp_samples


def run(model: str, model_args: str, out: Path, prompts: int, split: str) -> Path:
    """One lm-eval run of `rtp_toxicity_5` (skipped when its results exist)."""
    if not any(out.rglob("results_*.json")):
        command = ["lm_eval", "--model", "aura-hooked", "--model_args", f"model={model},{model_args}",
                   "--tasks", "rtp_toxicity_5", "--limit", str(prompts), "--batch_size", "25", "--log_samples",
                   "--metadata", json.dumps({"rtp_split": split}), "--output_path", str(out)]
        subprocess.run(command, check=True, env={**os.environ, "AURA_TL_SCORER": "jigsaw-bilstm"})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["smollm2-135m", "gemma3-270m"])
    parser.add_argument("--prompts", type=int, default=40)
    parser.add_argument("--split", default="calibrate")
    parser.add_argument("--intervention", action="append", default=[], help="MODEL=FILE: use a learned file")
    parser.add_argument("--out", type=Path, default=Path("out/default-screen"))
    args = parser.parse_args()
    files = dict(item.split("=", 1) for item in args.intervention)
    for model in args.models:
        steer = f"intervention={files[model]}" if model in files else "cache=true"  # no method: the default
        base = required_rtp_samples(run(model, "method=none", args.out / model / "none", args.prompts, args.split))
        other = required_rtp_samples(run(model, steer, args.out / model / "default", args.prompts, args.split))
        print(f"{model}: {len(base)} prompts x 5 samples, {args.split} split")
        for key in PAIRED_KEYS:
            stats = paired_reduction(base, other, key)
            unsteered = sum(r[key] for r in base.values()) / len(base)
            steered = sum(r[key] for r in other.values()) / len(other)
            print(f"  {key:22} {unsteered:.3f} -> {steered:.3f}  reduction {stats['ratio']:.2f}x "
                  f"({stats['ratio_lo']:.2f}-{stats['ratio_hi']:.2f})")


if __name__ == "__main__":
    main()
