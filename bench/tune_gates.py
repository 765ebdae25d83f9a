"""Tune the gates of a token-gated intervention file through the model (the `tuned` rule's refine step alone), so
several tunings share one fitted file: the same concept data and neutral text `learn_gates` reads, and the same
result as `aura-tl learn --gate tuned ...` with those options (with `--max-ppl-increase`, calibrated as that learn
calibrates). A file already tuned is only calibrated again, from the strength it was tuned at (another panel or
budget without tuning again).

    python bench/tune_gates.py tok.safetensors tuned.safetensors --options "gate_tune_keep=10;gate_tune_steps=100"
    python bench/tune_gates.py tuned.safetensors near.safetensors --max-ppl-increase 5 --calibration-panel near
"""

from __future__ import annotations

import argparse
import json

from aura_tl.gating import get_gate
from aura_tl.intervention import Intervention
from aura_tl.learn import calibrated, concept_data_for, with_neutral_text
from aura_tl.methods import ConceptOptions, get_method
from aura_tl.models import load_model
from aura_tl.options import as_dict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fitted", help="an intervention file gated by the token rule (or tuned: calibrated again)")
    parser.add_argument("output")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--options", default="", help="the tuned rule's options, k=v;k=v")
    parser.add_argument("--max-ppl-increase", type=float, default=None,
                        help="then calibrate the strength (up to the file's) as `learn` does, within this budget")
    parser.add_argument("--calibration-panel", default="full",
                        help="the panel calibration keeps it on (learn's option)")
    parser.add_argument("--seed", type=int, default=None,
                        help="another seed than the file's (the concept sample, the tuning's order): how much a "
                             "tuning depends on it")
    args = parser.parse_args()
    fitted = Intervention.load(args.fitted)
    given = fitted.gate_rule.name if fitted.gate_rule is not None else None
    if given not in ("token", "tuned"):
        raise SystemExit(f"{args.fitted}: give a file gated by the token rule (its gate is the starting point), or "
                         f"one already tuned (to calibrate it again)")
    if given == "tuned" and args.max_ppl_increase is None:
        raise SystemExit(f"{args.fitted} is tuned already: give --max-ppl-increase to calibrate it again")
    rule = get_gate("tuned")
    tuned_with = fitted.metadata["gate"]["options"] if given == "tuned" else {}
    options = rule.options(**{**tuned_with, **dict(item.split("=", 1) for item in args.options.split(";") if item)})
    learned = fitted.metadata.get("options", {})
    if args.seed is not None:
        learned = {**learned, "seed": args.seed}
    model = load_model(args.model, device="cpu")
    concept = ConceptOptions(**{k: learned[k] for k in ("data", "max_per_class", "seed") if k in learned})
    if given == "tuned":  # calibrate again from the strength it was tuned at
        tuned = fitted.with_strength(float(options.gate_tune_strength or fitted.strength))
    else:
        data = with_neutral_text(model, concept_data_for(concept), rule.neutral_sources(options))  # as learn_gates
        gate = {**fitted.metadata["gate"], "rule": rule.name, "options": as_dict(options)}
        start = Intervention(fitted.method, fitted.tensors, fitted.shape,
                             {**fitted.metadata, "gate": gate, "options": learned}, fitted.strength)
        tuned = rule.refine(model, start, data, options)
        print(json.dumps(tuned.metadata["gate"]["tuned"]))
        tuned.save(args.output)  # kept if calibration fails
    if args.max_ppl_increase is not None:
        # the options `aura-tl learn --gate tuned` would have had: the file's, the tuned rule's, the budget
        values = {**{k: v for k, v in learned.items() if k != "gate_options"}, **as_dict(options), "gate": rule.name,
                  "max_ppl_increase": args.max_ppl_increase, "calibration_panel": args.calibration_panel}
        method = get_method(fitted.method).options(**values)
        tuned = calibrated(model, tuned, method)
        tuned = Intervention(tuned.method, tuned.tensors, tuned.shape, {**tuned.metadata, "options": as_dict(method)},
                             tuned.strength)
    tuned.save(args.output)


if __name__ == "__main__":
    main()
