"""`aura-tl`: learn an intervention, generate with and without it, inspect a saved one.

A thin shell: it parses arguments and calls the library. Argument names match the lm-eval model's
(`model`, `intervention`, `method`, `hooks`, `strength`, `num_experts`, `damp_alpha`, `pooling`).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from aura_tl.hooks import DEFAULT_HOOKS, layer_of
from aura_tl.learn import DEFAULT_DAMP_ALPHA, DEFAULT_NUM_EXPERTS
from aura_tl.models import DEFAULT_MODEL

METHODS = ("aura", "det0", "damp", "destein")
DEFAULT_PROMPTS = [
    "I can't believe you would say that, you",
    "The people who live next door are",
    "Shut up, you",
    "My favourite thing about weekends is",
]


def _model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help="TransformerLens name, local HF folder, .gguf file, or the embedded 'smollm2-135m'")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument("--dtype", default="float32", help="float32, bfloat16 or float16")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aura-tl", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    learn = sub.add_parser("learn", help="model + labelled data -> intervention file (.safetensors)")
    _model_args(learn)
    learn.add_argument("--data", default="embedded",
                       help="concept data: a Jigsaw/Davidson/RTP/ParaDetox/text,label file, or 'embedded'")
    learn.add_argument("--layout", default="auto")
    learn.add_argument("--method", choices=METHODS, default="aura")
    learn.add_argument("--hooks", default=DEFAULT_HOOKS, help="hook pattern(s), comma-separated; '*' is the layer")
    learn.add_argument("--pooling", choices=("max", "mean", "last"), default="max")
    learn.add_argument("--max-per-class", type=int, default=500, help="cap on sentences per class (balanced)")
    learn.add_argument("--seed", type=int, default=0)
    learn.add_argument("--num-experts", type=int, default=DEFAULT_NUM_EXPERTS, help="k for det0/damp")
    learn.add_argument("--damp-alpha", type=float, default=DEFAULT_DAMP_ALPHA)
    learn.add_argument("--strength", type=float, default=1.0, help="lambda in [0, 1]")
    learn.add_argument("--batch-size", type=int, default=32)
    learn.add_argument("--responses", default=None, help="save/reuse pooled responses at this .safetensors path")
    learn.add_argument("--pairs", default=None, help="destein: JSONL of {toxic, nontoxic} pairs (default: self-induced)")
    learn.add_argument("--count", type=int, default=None, help="destein: number of pairs")
    learn.add_argument("--alpha", type=float, default=None, help="destein: fusion strength (default by model family)")
    learn.add_argument("-o", "--output", default="intervention.safetensors")

    gen = sub.add_parser("generate", help="prompt(s) -> continuations with and without the intervention")
    _model_args(gen)
    gen.add_argument("--intervention", required=True, help="an intervention .safetensors file")
    gen.add_argument("--prompt", action="append", help="a prompt (repeatable); default: a few built-in ones")
    gen.add_argument("--strength", type=float, default=None, help="override the file's lambda")
    gen.add_argument("--max-new-tokens", type=int, default=30)
    gen.add_argument("--do-sample", action="store_true")
    gen.add_argument("--temperature", type=float, default=1.0)
    gen.add_argument("--top-p", type=float, default=1.0)
    gen.add_argument("--seed", type=int, default=0)

    inspect = sub.add_parser("inspect", help="an intervention file -> summary table (and --plot)")
    inspect.add_argument("intervention")
    inspect.add_argument("--plot", default=None, help="write a PNG: AUROC histogram per layer, alpha distribution")
    return parser


def cmd_learn(args) -> int:
    from aura_tl.data import load_concept_data
    from aura_tl.learn import learn_intervention
    from aura_tl.models import load_model

    model = load_model(args.model, device=args.device, dtype=args.dtype)
    started = time.perf_counter()
    if args.method == "destein":
        extra = {k: v for k, v in {"pairs": args.pairs, "count": args.count, "alpha": args.alpha}.items()
                 if v is not None}
        intervention = learn_intervention(model, None, "destein", strength=args.strength,
                                          batch_size=args.batch_size, **extra)
    else:
        data = load_concept_data(args.data, layout=args.layout, max_per_class=args.max_per_class, seed=args.seed)
        print(f"data: {data.source} ({data.layout}), {data.counts[1]} toxic + {data.counts[0]} non-toxic sentences")
        intervention = learn_intervention(
            model, data, args.method, args.hooks, pooling=args.pooling, num_experts=args.num_experts,
            damp_alpha=args.damp_alpha, strength=args.strength, batch_size=args.batch_size,
            responses_path=args.responses,
        )
    intervention.metadata.setdefault("seconds", {})["total"] = round(time.perf_counter() - started, 3)
    path = intervention.save(args.output)
    print_summary(intervention)
    print(f"saved {args.method} intervention to {path} ({time.perf_counter() - started:.1f} s)")
    return 0


def print_summary(intervention) -> None:
    rows = intervention.summary_rows()
    meta = intervention.metadata
    print(f"method {intervention.method}  model {intervention.shape.name}  strength {intervention.strength}")
    if "data" in meta:
        print(f"data {meta['data'].get('source')}  n={meta['data'].get('n')}  pooling {meta.get('pooling')}")
    if intervention.method == "destein":
        print(f"{'hook':34} {'norm':>9} {'mean probe acc':>15}")
        accuracy = meta.get("probe_accuracy", {})
        for row in rows:
            accs = accuracy.get(row["hook"], [])
            mean_acc = sum(accs) / len(accs) if accs else float("nan")
            print(f"{row['hook']:34} {row['norm']:9.3f} {mean_acc:15.3f}")
        return
    print(f"{'hook':30} {'neurons':>8} {'experts':>8} {'min alpha':>10} {'max AUROC':>10}")
    for row in rows:
        print(f"{row['hook']:30} {row['size']:8d} {row['experts']:8d} {row['min_alpha']:10.4f} "
              f"{row.get('max_auroc', float('nan')):10.4f}")
    total = sum(r["size"] for r in rows)
    experts = sum(r["experts"] for r in rows)
    print(f"{'total':30} {total:8d} {experts:8d}")


def cmd_generate(args) -> int:
    from aura_tl.generation import SamplingConfig, generate
    from aura_tl.intervention import Intervention
    from aura_tl.models import load_model

    intervention = Intervention.load(args.intervention)
    if args.strength is not None:
        intervention = intervention.with_strength(args.strength)
    model = load_model(args.model, device=args.device, dtype=args.dtype)
    intervention.check_compatible(model)
    prompts = args.prompt or DEFAULT_PROMPTS
    config = SamplingConfig(args.max_new_tokens, args.do_sample, args.temperature, args.top_p, args.seed)
    plain = generate(model, prompts, config)
    with intervention.applied(model):
        steered = generate(model, prompts, config)
    for prompt, a, b in zip(prompts, plain, steered):
        print(f"prompt:  {prompt!r}\n  plain:   {a!r}\n  {intervention.method}:{' ' * max(1, 7 - len(intervention.method))}{b!r}\n")
    return 0


def cmd_inspect(args) -> int:
    from aura_tl.intervention import Intervention

    intervention = Intervention.load(args.intervention)
    print_summary(intervention)
    if args.plot:
        from aura_tl.plots import plot_intervention

        plot_intervention(intervention, args.plot)
        print(f"wrote {args.plot}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    commands = {"learn": cmd_learn, "generate": cmd_generate, "inspect": cmd_inspect}
    try:
        return commands[args.command](args)
    except (ValueError, FileNotFoundError) as error:
        print(f"aura-tl {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
