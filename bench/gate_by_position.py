"""Where a gated intervention opens, and what it costs there: per text kind, the gate value (mean over the file's
hooks, unsteered model) and the loss change per token, by position after BOS.

    python bench/gate_by_position.py --model smollm2-135m --intervention out/default.safetensors --texts 100

Kinds: PIQA- and HellaSwag-length texts (`aura_tl.retention.task_texts`) and the toxic and non-toxic RTP
prompts of the `calibrate` split. A gate that tells toxic from non-toxic RTP prompts but is as open on a PIQA answer
as on a toxic prompt has learned the corpus, not toxicity (docs/results/token-gate.md).
"""

from __future__ import annotations

import argparse
from functools import partial

import numpy as np
import torch

from aura_tl.calibrate import token_logprobs_from_bos
from aura_tl.data import rtp_records
from aura_tl.gating import gate_at
from aura_tl.intervention import Intervention
from aura_tl.models import hf_tokenizer, load_model, start_token_id
from aura_tl.retention import task_texts
from aura_tl.splits import prompt_is_toxic, prompt_text

BINS = [(0, 1), (1, 2), (2, 4), (4, 8), (8, 16), (16, 32), (32, 64), (64, 256)]


def gate_values(model, iv: Intervention, rows: list[list[int]]) -> list[np.ndarray]:
    """[hooks, positions] gate values per row (BOS first), the unsteered model reading it (a per-unit gate's mean
    over units)."""
    rule, start = iv.gate_rule, start_token_id(hf_tokenizer(model))
    out = []
    for row in rows:
        seen: dict[str, torch.Tensor] = {}

        def record(name):
            def hook(activation, hook):
                gate = gate_at(activation, partial(rule.value, tensors=iv.tensors[name]))[0]
                seen[name] = gate.reshape(len(gate), -1).mean(-1)  # a per-unit gate: its mean over units
            return hook

        with torch.inference_mode():
            model.run_with_hooks(torch.tensor([[start] + row]), fwd_hooks=[(h, record(h)) for h in iv.hook_names])
        out.append(torch.stack([seen[h] for h in iv.hook_names]).numpy())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--intervention", required=True, help="a gated intervention file")
    parser.add_argument("--texts", type=int, default=100, help="texts of each kind")
    args = parser.parse_args()
    model, iv = load_model(args.model), Intervention.load(args.intervention)
    if not iv.gated:
        raise SystemExit(f"{args.intervention} is not gated")
    tokenizer = hf_tokenizer(model)
    records = rtp_records(split="calibrate")
    kinds = {**{k: v for k, v in task_texts(slice(0, args.texts)).items()},
             "toxic prompts": [prompt_text(r) for r in records if prompt_is_toxic(r)][:args.texts],
             "non-toxic prompts": [prompt_text(r) for r in records if not prompt_is_toxic(r)][:args.texts]}
    print("| text | " + " | ".join(f"gate {lo}-{hi - 1}" for lo, hi in BINS) + " | loss change / token |")
    print("|---|" + "---|" * (len(BINS) + 1))
    for kind, texts in kinds.items():
        rows = [tokenizer(t, add_special_tokens=False)["input_ids"][:255] for t in texts]
        base = token_logprobs_from_bos(model, rows, 16)
        with iv.applied(model):
            steered = token_logprobs_from_bos(model, rows, 16)
        change = np.concatenate([b - s for b, s in zip(base, steered)]).mean()
        gates = gate_values(model, iv, rows)
        cells = []
        for lo, hi in BINS:
            values = [g[:, lo + 1:hi + 1].mean() for g in gates if g.shape[1] > lo + 1]
            cells.append(f"{np.mean(values):.2f}" if values else "-")
        print(f"| {kind} ({len(rows)}) | " + " | ".join(cells) + f" | {change:+.3f} nats |", flush=True)


if __name__ == "__main__":
    main()
