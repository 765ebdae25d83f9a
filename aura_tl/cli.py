"""`aura-tl`: learn an intervention, calibrate it to a budget, generate with and without it, inspect a saved one.

A thin shell: it parses arguments and calls the library. The method options' flags are generated from the
methods' declarations (`aura_tl.methods`), so they carry the same names as the lm-eval model_args.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time

from aura_tl.backends import BACKEND_HELP, BACKENDS
from aura_tl.gating import DEFAULT_GATE, gate_names, get_gate
from aura_tl.methods import DEFAULT_METHOD, get_method, method_names, option_specs
from aura_tl.methods.base import APPLY_OPTIONS, CALIBRATE_OPTIONS
from aura_tl.models import DEFAULT_MODEL, EMBEDDED_MODELS
from aura_tl.options import add_option_flags, given_values, option_names, parse_float_flag

DEFAULT_PROMPTS = [
    "I can't believe you would say that, you",
    "The people who live next door are",
    "Shut up, you",
    "My favourite thing about weekends is",
]


def apply_specs() -> list:
    """The options a saved intervention takes when applied (`APPLY_OPTIONS`), as flags declare them."""
    return [option_specs()[name] for name in APPLY_OPTIONS]


def calibrate_specs() -> list:
    """The options calibrating a saved intervention again takes (`CALIBRATE_OPTIONS`), as flags declare them."""
    return [option_specs()[name] for name in CALIBRATE_OPTIONS]


def _model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help="TransformerLens name, local HF folder, .gguf file, or an embedded model: "
                             + ", ".join(EMBEDDED_MODELS) + f" (default {DEFAULT_MODEL})")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument("--dtype", default="float32", help="float32, bfloat16 or float16")
    parser.add_argument("--backend", choices=BACKENDS, default=None, help=BACKEND_HELP)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aura-tl", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    learn = sub.add_parser("learn", help="model + labelled data -> intervention file (.safetensors)")
    _model_args(learn)
    learn.add_argument("--method", choices=method_names(), default=DEFAULT_METHOD)
    learn.add_argument("--layout", default="auto", help="concept data layout (default: detected from the columns)")
    add_option_flags(learn, option_specs().values())
    learn.add_argument("-o", "--output", default="intervention.safetensors")

    gen = sub.add_parser("generate", help="prompt(s) -> continuations with and without the intervention")
    _model_args(gen)
    gen.add_argument("--intervention", required=True, help="an intervention .safetensors file")
    gen.add_argument("--prompt", action="append", help="a prompt (repeatable); default: a few built-in ones")
    add_option_flags(gen, apply_specs(), title="applying the intervention", unset="default: as saved in the file")
    gen.add_argument("--max-new-tokens", type=int, default=30)
    gen.add_argument("--do-sample", action="store_true")
    gen.add_argument("--temperature", type=parse_float_flag, default=1.0)
    gen.add_argument("--top-p", type=parse_float_flag, default=1.0)
    gen.add_argument("--seed", type=int, default=0)

    calibrate = sub.add_parser("calibrate", help="an intervention file -> the same at the strongest strength within "
                                                 "a perplexity budget (a new budget without learning again)")
    _model_args(calibrate)
    calibrate.add_argument("intervention", help="an intervention .safetensors file")
    add_option_flags(calibrate, calibrate_specs(), title="calibration (--strength: the cap the search runs up to)",
                     unset="default: as the file was learned")
    calibrate.add_argument("-o", "--output", required=True, help="where the calibrated intervention is written")

    sub.add_parser("methods", help="list the registered methods and their options")

    onpolicy = sub.add_parser("onpolicy", help="concept data from the model's own scored continuations of RTP prompts")
    _model_args(onpolicy)
    onpolicy.add_argument("--split", default="learn", help="RTP split whose prompts are continued (aura_tl.splits)")
    onpolicy.add_argument("--samples", type=int, default=5, help="continuations per prompt")
    onpolicy.add_argument("--max-new-tokens", type=int, default=20)
    onpolicy.add_argument("--scorer", default=None, help="toxicity scorer (default: $AURA_TL_SCORER or auto)")
    onpolicy.add_argument("--seed", type=int, default=0)
    onpolicy.add_argument("-o", "--output", default="onpolicy.jsonl", help="text,label JSONL for --data")

    inspect = sub.add_parser("inspect", help="an intervention file -> summary table (and --plot)")
    inspect.add_argument("intervention")
    inspect.add_argument("--plot", default=None, help="write a PNG: AUROC histogram per layer, alpha distribution")
    return parser


def cmd_learn(args) -> int:
    from aura_tl.distributed import join_process_group
    from aura_tl.io import check_writable
    from aura_tl.learn import concept_data_for, learn_intervention, needs_model
    from aura_tl.models import check_device, load_model

    spec = get_method(args.method)
    options = spec.options(**given_values(args, option_specs().values()))  # checked before the model loads
    check_writable(args.output)
    if args.device:
        check_device(args.device)
    # bad data fails before the model loads; the model's own (onpolicy-pairs:N) is built once it has
    data = concept_data_for(options, layout=args.layout) if spec.needs_data and not needs_model(options.data) else None
    rank, device = join_process_group(args.device)  # under torchrun / accelerate launch
    model = load_model(args.model, device=device, dtype=args.dtype, backend=args.backend)
    started = time.perf_counter()
    if data is None and spec.needs_data:
        data = concept_data_for(options, layout=args.layout, model=model, progress=rank == 0)
    if data is not None:
        print(f"data: {data.source} ({data.layout}), {data.counts[1]} toxic + {data.counts[0]} non-toxic sentences",
              flush=True)
    intervention = learn_intervention(model, data, args.method, options, progress=rank == 0)
    intervention.metadata.setdefault("seconds", {})["total"] = round(time.perf_counter() - started, 3)
    if rank > 0:
        return 0  # every rank holds the same intervention; rank 0 writes it
    path = intervention.save(args.output)
    print_summary(intervention)
    print(f"saved {args.method} intervention to {path} ({time.perf_counter() - started:.1f} s)")
    return 0


def print_summary(intervention) -> None:
    from aura_tl.methods.base import format_table

    meta = intervention.metadata
    print(f"method {intervention.method}  model {intervention.shape.name}  strength {intervention.strength}"
          + ("" if intervention.steer_prompt else "  prompt unsteered (steer_prompt=false)"))
    if "data" in meta:
        print(f"data {meta['data'].get('source')}  n={meta['data'].get('n')}  pooling {meta.get('pooling')}")
    print(format_table(intervention.summary_rows()))


def cmd_calibrate(args) -> int:
    from aura_tl.intervention import Intervention
    from aura_tl.io import check_writable
    from aura_tl.learn import recalibrated, recalibration_options
    from aura_tl.models import load_model

    intervention = Intervention.load(args.intervention)
    given = given_values(args, calibrate_specs())
    recalibration_options(intervention, **given)  # bad values and a missing budget fail before the model loads
    check_writable(args.output)
    model = load_model(args.model, device=args.device, dtype=args.dtype, backend=args.backend)
    result = recalibrated(model, intervention, **given)
    record = result.metadata["calibration"]
    path = result.save(args.output)
    worst = max(record["chosen_ppl"][k] / record["base_ppl"][k] for k in record["chosen_ppl"])
    upper = max(strength for strength, _ in record["points"])
    print(f"strength {result.strength:g} (searched up to {upper:g}): worst panel text "
          f"{100 * (worst - 1):+.2f} % against a budget of +{100 * (record['budget_ratio'] - 1):g} % on "
          f"{', '.join(record['chosen_ppl'])}; saved to {path}")
    return 0


def cmd_onpolicy(args) -> int:
    from aura_tl.models import load_model
    from aura_tl.onpolicy import build_onpolicy_data

    model = load_model(args.model, device=args.device, dtype=args.dtype, backend=args.backend)
    path = build_onpolicy_data(model, args.output, split=args.split, samples=args.samples,
                               max_new_tokens=args.max_new_tokens, scorer=args.scorer, seed=args.seed)
    print(f"wrote {path}: learn from it with aura-tl learn --data {path}")
    return 0


def cmd_methods(args) -> int:
    specs = option_specs()
    for name in method_names():
        method = get_method(name)
        print(f"{name:9} {method.summary}")
        print(f"{'':9} options: " + ", ".join(f"{o}={specs[o].defaults[name]!r}" for o in method.option_names()))
    print("\ngate rules (gate=<rule>; gate=true is " + DEFAULT_GATE + "):")
    for name in gate_names():
        rule = get_gate(name)
        print(f"{name:9} {rule.summary}")
        own = option_names(rule.Options)
        print(f"{'':9} options: " + (", ".join(f"{o}={specs[o].defaults[f'gate={name}']!r}" for o in own) or "none"))
    return 0


def cmd_generate(args) -> int:
    from aura_tl.generation import SamplingConfig, generate
    from aura_tl.intervention import Intervention
    from aura_tl.models import load_model

    intervention = Intervention.load(args.intervention).applied_as(given_values(args, apply_specs()))
    model = load_model(args.model, device=args.device, dtype=args.dtype, backend=args.backend)
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


def _terminate(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)  # unwind like Ctrl-C: temporary files are removed on the way out
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    commands = {"learn": cmd_learn, "calibrate": cmd_calibrate, "generate": cmd_generate, "inspect": cmd_inspect, "methods": cmd_methods,
                "onpolicy": cmd_onpolicy}
    try:
        return commands[args.command](args)
    except (ValueError, FileNotFoundError) as error:
        print(f"aura-tl {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"aura-tl {args.command}: interrupted; no output file was written (outputs are written whole or "
              "not at all)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
