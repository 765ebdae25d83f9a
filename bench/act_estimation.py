"""Linear-AcT learning time: causal vs non-causal estimation on the same sentences, in one process, interleaved.

    python bench/act_estimation.py --data rtp:learn --max-per-class 300 --rounds 2

Prints each median and the ratio causal / non-causal (causal runs every block about twice: once to carry the
residual stream forward with the earlier maps applied, once to pool; non-causal runs it once).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--data", default="rtp:learn")
    parser.add_argument("--max-per-class", type=int, default=300)
    parser.add_argument("--hooks", default="hook_attn_out")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    from aura_tl.data import load_concept_data
    from aura_tl.learn import learn_intervention
    from aura_tl.models import load_model
    from aura_tl.paths import shared_data_dir

    if args.data.startswith("rtp:") and shared_data_dir():
        os.environ.setdefault("AURA_TL_RTP", str(shared_data_dir() / "rtp"))
    model = load_model(args.model, device="cpu")
    data = load_concept_data(args.data, max_per_class=args.max_per_class)
    times: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(args.rounds):
        for causal in (False, True):
            started = time.perf_counter()
            learn_intervention(model, data, "linact", hooks=args.hooks, causal=causal, max_ppl_increase="none",
                               progress=False)  # estimation only: the calibration would cost both the same
            times[causal].append(time.perf_counter() - started)
    plain, causal = statistics.median(times[False]), statistics.median(times[True])
    print(f"{len(data)} sentences, hooks {args.hooks}, {args.rounds} rounds (medians)")
    print(f"non-causal {plain:.1f} s   causal {causal:.1f} s   causal / non-causal {causal / plain:.2f}x")


if __name__ == "__main__":
    main()
