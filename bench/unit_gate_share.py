"""How much of a token-gated edit a per-unit gate (`gate=unit`) keeps, by kind of text: the norm of
t(a) u(a) (f(a) - a) over that of t(a) (f(a) - a) per position, summed over positions, at a few layers, with the
unsteered model's activations (f the file's edit at lambda 1, t the token factor, u the per-unit factor). A
factor near 1 on task-length text means the per-unit test closes nothing the token gate left open.

    python bench/unit_gate_share.py --intervention out/tok-screen/interventions/leakug.safetensors
"""

from __future__ import annotations

import argparse

import torch

from aura_tl.data import rtp_records
from aura_tl.gating import get_gate
from aura_tl.intervention import Intervention, hook_function
from aura_tl.models import hf_tokenizer, load_model
from aura_tl.retention import task_texts
from aura_tl.splits import prompt_is_toxic, prompt_text


def kept_share(model, iv: Intervention, texts: list[str], layers: list[str], max_tokens: int = 256
               ) -> dict[str, tuple[float, float]]:
    """hook -> (mean token gate, share of the token-gated edit's norm the per-unit factor keeps) over `texts`."""
    rule, token_rule, tokenizer = iv.gate_rule, get_gate("token"), hf_tokenizer(model)
    edits = {h: hook_function(iv.spec, None, iv.tensors[h], 1.0, iv.metadata) for h in layers}
    sums = {h: torch.zeros(3, dtype=torch.float64) for h in layers}
    for text in texts:
        ids = torch.tensor([tokenizer(text)["input_ids"][:max_tokens]])
        with torch.inference_mode():
            _, cache = model.run_with_cache(ids, names_filter=lambda name: name in layers)
        for h in layers:
            a, t = cache[h], iv.tensors[h]
            delta = (edits[h](a.clone(), None) - a).flatten(2)[0]
            flat = a.flatten(2)[0]
            token = token_rule.value(flat, t)[:, None]  # the unit rule's token factor: the token rule's gate
            both = rule.value(flat, t)
            sums[h] += torch.tensor([(token * delta).pow(2).sum().item(), (both * delta).pow(2).sum().item(),
                                     token.mean().item() / len(texts)], dtype=torch.float64)
    return {h: (float(s[2]), float((s[1] / s[0]).sqrt())) for h, s in sums.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--intervention", required=True, help="a file gated with gate=unit")
    parser.add_argument("--texts", type=int, default=40, help="texts of each kind")
    parser.add_argument("--layers", type=int, nargs="+", default=[5, 15, 25])
    args = parser.parse_args()
    model, iv = load_model(args.model), Intervention.load(args.intervention)
    if iv.gate_rule is None or iv.gate_rule.name != "unit":
        raise SystemExit(f"{args.intervention} is not gated with gate=unit")
    layers = [h for h in iv.hook_names if int(h.split(".")[1]) in args.layers]
    kinds = dict(task_texts(slice(0, args.texts)))
    kinds["toxic prompts"] = [prompt_text(r) for r in rtp_records(split="calibrate") if prompt_is_toxic(r)][:args.texts]
    print("| text | " + " | ".join(f"layer {h.split('.')[1]}: token gate, unit keeps" for h in layers) + " |")
    print("|---|" + "---|" * len(layers))
    for kind, texts in kinds.items():
        shares = kept_share(model, iv, texts, layers)
        print(f"| {kind} | " + " | ".join(f"{g:.2f}, {k:.2f}" for g, k in shares.values()) + " |", flush=True)


if __name__ == "__main__":
    main()
