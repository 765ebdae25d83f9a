"""Response collection on the bridge with and without the head on every position, interleaved in one process.

    python bench/bridge_collection.py --model gemma3-270m

`collect_responses` at every `mlp.hook_post` (max pooling) of 128 `rtp-learn` sentences on a TransformerBridge,
timed with `Backend.run_through` as it is (Hugging Face's head unembeds the last position only) and with the
reference it replaced (the bridge's forward as called before: the head unembeds every position, as it must when
the last hooked block is the last block). Prints each round, the medians, the ratio now / reference, and the
largest difference between the two runs' responses (0: the same numbers).
"""

from __future__ import annotations

import argparse
import statistics
import time

from aura_tl.backends import BRIDGE
from aura_tl.data import load_concept_data
from aura_tl.models import load_model
from aura_tl.responses import collect_responses


def whole_head(self, model, tokens, attention_mask, last_layer):
    """The reference: the call `run_through` replaced (no `logits_to_keep`, so every position is unembedded)."""
    model(tokens, attention_mask=attention_mask, return_type=None, stop_at_layer=self.stop_at(model, last_layer))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--sentences", type=int, default=64, help="per class")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    model = load_model(args.model, device="cpu", backend="bridge")
    data = load_concept_data("rtp-learn", max_per_class=args.sentences, seed=0)
    backend_class, now = type(BRIDGE), type(BRIDGE).run_through
    times: dict[str, list[float]] = {"reference": [], "now": []}
    pooled = {}
    try:
        for _ in range(args.rounds):
            for label, run_through in (("reference", whole_head), ("now", now)):
                backend_class.run_through = run_through
                started = time.perf_counter()
                responses = collect_responses(model, data.texts, data.labels, "hook_post", pooling="max",
                                              progress=False)
                times[label].append(time.perf_counter() - started)
                pooled[label] = responses.pooled
    finally:
        backend_class.run_through = now
    gap = max(float((pooled["reference"][k] - pooled["now"][k]).abs().max()) for k in pooled["now"])
    median = {label: statistics.median(values) for label, values in times.items()}
    for label, values in times.items():
        print(f"{label:>9}: " + " ".join(f"{v:.2f}" for v in values) + f" s (median {median[label]:.2f} s)")
    print(f"{args.model}, {len(data.texts)} sentences: now / reference {median['now'] / median['reference']:.2f}x; "
          f"largest response difference {gap:g}")


if __name__ == "__main__":
    main()
