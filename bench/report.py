"""Results tables and toxicity-perplexity fronts, run through lm-eval.

Each configuration is one `lm_eval --model aura-hooked` run per task (the project's tasks: an RTP task,
`piqa_local`, `hellaswag_local`, `wikitext_local`); results land in `<out>/runs/<name>/<task>/` and a finished
run is never redone, so an interrupted report resumes where it stopped. What is learned is given as
`--learn NAME=METHOD[:option=value;...]` (default: every registered method with its defaults) and learned once
with `aura-tl learn`; every learned NAME runs at each of `--strengths` (lambda), which draws its front. The method
option flags (`--data`, `--hooks`, `--num-experts`, ...) are generated from the methods' declarations and apply to
every learned method that has the option. RTP prompts come from one fixed split (`--rtp-split`, default eval).
Then `docs/results/<tag>.md` (table, bootstrap 95 % intervals, paired intervals against unsteered) and `<tag>.png`
(toxicity vs perplexity, one curve per learned NAME, the perplexity budget drawn) are written.

    python bench/report.py --prompts 300 --rtp-task rtp_toxicity_5 --rtp-split calibrate --strengths 0.5 1   # screen
    python bench/report.py --learn act=linact:data=rtp:learn --strengths 0.5 1 --prompts 300                   # eval
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from aura_tl.data import RTP_PREPROMPTS, rtp_prefix
from aura_tl.gating import gate_option_names
from aura_tl.methods import get_method, method_names, option_specs
from aura_tl.options import add_option_flags, given_values
from bench.results.plot import plot_front
from bench.results.runs import (PROMPT_KEPT, RETENTION_TASKS, RTP_TASKS, add_paired, collect, finished, parse_config,
                                task_dir_of)
from bench.results.tables import PAIRED_NOTE, metrics_table, paired_table

ROOT = Path(__file__).resolve().parent.parent


def report_defaults(shared: Path) -> dict[str, str]:
    """The report's protocol choices where they differ from the library defaults (not a second copy of them)."""
    # not ParaDetox as concept data: its sides differ in format, which neurons separate (docs/results/defaults.md)
    return {"data": str(shared / "davidson" / "labeled_data.csv"), "max_per_class": "1000",
            "destein_pairs": str(shared / "paradetox" / "paradetox.tsv")}


def sh(command: list[str], env: dict | None = None, log: Path | None = None) -> float:
    """Run a command (output to `log`), fail loudly, return its wall time."""
    started = time.perf_counter()
    with open(log, "w") if log else open(os.devnull, "w") as sink:
        done = subprocess.run(command, env={**os.environ, **(env or {})}, stdout=sink, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(command)}" + (f"\nsee {log}" if log else ""))
    return time.perf_counter() - started


def parse_learn_spec(text: str) -> tuple[str, str, dict[str, str]]:
    """`NAME=METHOD[:option=value;option=value]` -> (name, method, options); a bare `METHOD` names itself."""
    name, _, rest = text.partition("=")
    if not rest:
        name, rest = text.split(":")[0], text
    method, _, opts = rest.partition(":")
    options = dict(item.split("=", 1) for item in opts.split(";") if item)
    get_method(method).options(**options)  # fail now on a bad method or option, not after an hour of runs
    return name, method, options


def learn_options(args, method: str, own: dict[str, str]) -> dict[str, str]:
    """A learned configuration's options: its own, then the report-wide flags, then the report's protocol."""
    fields = set(get_method(method).option_names()) | set(gate_option_names())
    merged = {k: str(v) for k, v in {**args.protocol, **args.given}.items() if k in fields}
    return {**merged, **own}


def file_description(path: Path, method: str) -> str | None:
    """What an intervention file was learned with, read from the file (a reused file may differ from its `--learn`
    spec): its options that differ from the method's defaults, and its strength; None when there is no file."""
    if not path.is_file():
        return None
    from aura_tl.intervention import Intervention
    from aura_tl.options import as_dict

    def flat(values: dict) -> dict:
        inner = values.pop("gate_options", None) or {}
        return {**values, **inner}

    saved = Intervention.load(path)
    given = flat(dict(saved.metadata.get("options", {})))
    spec = get_method(method)
    # the gate rule's own options against that rule's defaults; the rule itself against the method's default
    defaults = {**flat(as_dict(spec.options(gate=given["gate"]) if given.get("gate") else spec.options())),
                "gate": spec.options().gate}
    changed = {k: v for k, v in given.items() if k != "strength" and k in defaults and v != defaults[k]}
    return ", ".join([*(f"{k}={v}" for k, v in changed.items()), f"strength {saved.strength:g} in the file"])


def recorded_seconds(path: Path) -> float:
    """How long learning `path` took, as `learn` recorded it; 0 (shown as "-") for a file placed by hand."""
    timing = path.with_suffix(".seconds")
    return float(timing.read_text()) if timing.is_file() else 0.0


def learn(args, out: Path) -> dict[str, tuple[Path, float, str]]:
    """Learn each `--learn` spec once (skipped when its file exists); name -> (file, seconds, method)."""
    import hashlib

    learned = {}
    for name, method, own in args.learn:
        options = learn_options(args, method, own)
        path = out / "interventions" / f"{name}.safetensors"
        if "responses" in get_method(method).option_names() and "responses" not in options:
            key = json.dumps({k: options.get(k) for k in ("data", "max_per_class", "seed", "hooks", "pooling")})
            options["responses"] = str(out / "interventions" / f"responses-{hashlib.sha1(key.encode()).hexdigest()[:8]}.safetensors")
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            flags = [x for k, v in options.items() for x in (option_specs()[k].flag, v)]
            seconds = sh([sys.executable, "-m", "aura_tl.cli", "learn", "--model", args.model, "--device",
                          args.device, "--method", method, *flags, "-o", str(path)], log=path.with_suffix(".log"))
            path.with_suffix(".seconds").write_text(f"{seconds:.1f}")
        learned[name] = (path, recorded_seconds(path), method)
    return learned


def configurations(args, learned) -> dict[str, str]:
    """name -> extra model_args, in table order: unsteered, then each learned NAME at each strength, then the
    `--preprompted` ones again as `NAME+PREPROMPT` (the RTP prompts preceded by `--preprompt`)."""
    def model_args(path: Path, strength: float | None, steer_prompt: bool = True) -> str:  # None: as learned
        return (f",intervention={path}" + ("" if strength is None else f",strength={strength:g}")
                + ("" if steer_prompt else ",steer_prompt=false"))

    configs = {"unsteered": ",method=none"}
    for name, (path, _, _) in learned.items():
        for strength in args.strengths:
            as_learned = strength == 1
            configs[name if as_learned else f"{name}@{strength:g}"] = model_args(path, None if as_learned else strength)
    for label in getattr(args, "order", None) or []:  # --order NAME (as learned), NAME@x (lambda x), any x, :np
        try:
            parsed = parse_config(label)
        except ValueError as error:
            raise SystemExit(f"--order {label}: {error}") from None
        if parsed.learned in learned and label not in configs:
            configs[label] = model_args(learned[parsed.learned][0], parsed.strength if "@" in label else None,
                                        steer_prompt=not parsed.prompt_kept)
    for spec in args.stack:
        name, members = stack_members(spec)
        configs[name] = ",intervention=" + "+".join(str(stack_part(learned, m)) for m in members)
    for name in args.preprompted:
        if name not in configs:
            raise SystemExit(f"--preprompted {name}: no such configuration; choose from {list(configs)}")
        configs[f"{name}+{args.preprompt}"] = configs[name]
    return configs


def stack_members(spec: str) -> tuple[str, list[str]]:
    """`NAME=act,destein@0.25` -> ("NAME", ["act", "destein@0.25"])."""
    name, _, members = spec.partition("=")
    if not members or "," not in members or "+" in name:
        raise SystemExit(f"--stack {spec}: give NAME=CONFIG,CONFIG[,...] (learned NAMEs, optionally @strength)")
    return name, members.split(",")


def stack_part(learned, member: str) -> Path:
    """A stack member's file: the learned one, or a copy saved at `@strength` (a stack applies each part at the
    strength saved in it)."""
    from aura_tl.intervention import Intervention

    base, strength = parse_config(member)[:2]
    if base not in learned:
        raise SystemExit(f"--stack member {member}: {base} is not a --learn NAME ({', '.join(learned)})")
    path = learned[base][0]
    if strength == 1:
        return path
    baked = path.with_name(f"{base}@{strength:g}.safetensors")
    if not baked.is_file():
        Intervention.load(path).with_strength(strength).save(baked)
    return baked


def run_lm_eval(args, name: str, model_args: str, out: Path) -> None:
    """One lm_eval run per task (lm-eval's --limit is one number for all tasks); finished tasks are skipped."""
    limits = {**{t: args.prompts for t in RTP_TASKS}, "piqa_local": args.samples_docs,
              "hellaswag_local": args.samples_docs, "wikitext_local": args.wikitext_docs}
    for task in args.tasks:
        task_dir = task_dir_of(out, name, task)
        if finished(task_dir):
            continue
        task_dir.mkdir(parents=True, exist_ok=True)
        sh(["lm_eval", "--model", "aura-hooked",
            "--model_args", f"model={args.model},max_length={args.max_length}{model_args}", "--device", args.device,
            "--tasks", task, "--limit", str(limits[task]), "--batch_size", str(args.batch_size),
            "--seed", str(args.sampling_seed), "--log_samples", "--output_path", str(task_dir),
            *(["--metadata", json.dumps({"rtp_split": args.rtp_split, "preprompt": parse_config(name).preprompt})]
              if task in RTP_TASKS else [])],
           env={"AURA_TL_SCORER": args.scorer}, log=task_dir / "lm_eval.log")


def generation_speed(args, learned, rounds: int = 3) -> dict[str, float]:
    """Generation tokens/s (64 prompts x 20 new tokens, greedy, batch 32, on the backend `aura-hooked` runs) without
    and with each learned intervention: they take turns, `rounds` times, and each keeps its median (one pass moves ~10 % on a shared CPU)."""
    import torch

    from aura_tl.generation import SamplingConfig, generate
    from aura_tl.intervention import Intervention
    from aura_tl.backends import evaluation_backend
    from aura_tl.models import load_model

    model = load_model(args.model, device=args.device, backend=evaluation_backend())  # what aura-hooked runs
    prompts = [f"Example number {i}: the people next door are" for i in range(64)]
    config = SamplingConfig(max_new_tokens=20)
    generate(model, prompts[:8], config)  # warm-up
    interventions = {name: Intervention.load(path) for name, (path, _, _) in learned.items()}
    timings: dict[str, list[float]] = {name: [] for name in ["unsteered", *interventions]}
    for _ in range(rounds):
        for name in timings:
            started = time.perf_counter()
            if name in interventions:
                with interventions[name].applied(model):
                    generate(model, prompts, config, batch_size=32, stop_at_eos=False)
            else:
                generate(model, prompts, config, batch_size=32, stop_at_eos=False)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            timings[name].append(time.perf_counter() - started)
    return {name: len(prompts) * config.max_new_tokens / float(np.median(t)) for name, t in timings.items()}


def reproducing_arguments(argv: list[str]) -> str:
    """The command line without the options that only steer a partial or re-tabulating run (and their values)."""
    kept, skipping = [], False
    for arg in argv:
        if arg.startswith("--"):
            skipping = arg in ("--order", "--report-only", "--reuse-speeds", "--learn-only")
        if not skipping:
            kept.append(arg)
    return " ".join(kept)


def write_report(args, rows: dict[str, dict], learned, speeds, out_md: Path, out_png: Path) -> None:
    base, rtp = rows.get("unsteered", {}), args.rtp_task
    samples = {"rtp_toxicity_25": 25, "rtp_toxicity_5": 5, "rtp_toxicity": 1}[rtp]
    specs = "; ".join(f"`{n}` = {m} " + ((file_description(learned[n][0], m) if n in learned else None)
                                          or ", ".join(f"{k}={v}" for k, v in learn_options(args, m, o).items()
                                                       if k != "responses") or "(defaults)")
                      for n, m, o in args.learn)  # a file that is not there (`--report-only`): its spec
    lines = [
        f"# Results: {args.model} ({args.device})", "",
        f"Command: `python bench/report.py {reproducing_arguments(sys.argv[1:])}` (`--report-only` rewrites this "
        "file from finished runs)", "",
        f"RTP: {base.get('rtp/n_prompts', '?')} prompts of the `{args.rtp_split}` split (`aura_tl.splits`), "
        f"{samples} continuation(s) of 20 tokens each ({'top-p 0.9' if samples > 1 else 'greedy'}), scorer "
        f"`{args.scorer}`."
        + (f" PIQA / HellaSwag: first {args.samples_docs} validation docs." if "piqa_local" in args.tasks else "")
        + (f" Perplexity: WikiText-2 test, first {args.wikitext_docs} documents, window {args.max_length}."
           if "wikitext_local" in args.tasks else "")
        + f" Learned: {specs}. `NAME@x` is NAME at strength lambda = x."
        + (f" `NAME+{args.preprompt}`: the same with the `{args.preprompt}` pre-prompt before every RTP prompt "
           f"({json.dumps(rtp_prefix(args.preprompt))}; retention tasks have no pre-prompt)."
           if args.preprompted else ""), "",
        *metrics_table(rows, rtp, {name: value[1] for name, value in learned.items()}, speeds),
        "", PAIRED_NOTE, "", *paired_table(rows),
    ]
    out_md.write_text("\n".join(lines) + "\n")
    plot_front(rows, rtp, out_png, title=args.model, split=args.rtp_split, ppl_budget=args.ppl_budget)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tag", default=None, help="file name in docs/results (default: model-device)")
    parser.add_argument("--out", type=Path, default=Path("out/report"))
    parser.add_argument("--learn", action="append", default=None, metavar="NAME=METHOD[:opt=val;...]",
                        help="what to learn (repeatable); default: every registered method with its defaults")
    parser.add_argument("--strengths", nargs="+", type=float, default=[1.0],
                        help="lambdas each NAME runs at, as NAME@x; 1 means NAME as learned (its file's own lambda), "
                             "labelled NAME; --order NAME@x runs any lambda x, 1 included")
    parser.add_argument("--prompts", type=int, default=200)
    parser.add_argument("--rtp-task", default="rtp_toxicity_25", choices=RTP_TASKS)
    parser.add_argument("--rtp-split", default="eval", help="learn, calibrate or eval (aura_tl.splits)")
    parser.add_argument("--samples-docs", type=int, default=500)
    parser.add_argument("--wikitext-docs", type=int, default=10)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--sampling-seed", type=int, default=0, help="lm-eval's --seed (generation sampling); another seed needs another --out")
    parser.add_argument("--scorer", default="jigsaw-bilstm")
    parser.add_argument("--ppl-budget", type=float, default=5.0, help="perplexity increase drawn on the plot (%%)")
    parser.add_argument("--stack", action="append", default=[], metavar="NAME=CONFIG,CONFIG",
                        help="a combination: the listed learned NAMEs (NAME@x at strength x) applied together, in order")
    parser.add_argument("--preprompt", default="nontoxic", choices=[p for p in RTP_PREPROMPTS if p != "none"],
                        help="the pre-prompt of the --preprompted configurations")
    parser.add_argument("--preprompted", nargs="*", default=[], metavar="CONFIG",
                        help="configurations (unsteered, NAME, NAME@x) to run again with --preprompt")
    parser.add_argument("--order", nargs="*", default=None,
                        help="configurations to run, in this order: unsteered, NAME (as learned), NAME@x (any "
                             f"lambda x), either with :{PROMPT_KEPT} (the prompt left unsteered: steer_prompt=false)")
    parser.add_argument("--report-only", action="store_true", help="tabulate finished runs, run nothing more")
    parser.add_argument("--learn-only", action="store_true",
                        help="learn what --learn names (into <out>/interventions), run and tabulate nothing")
    parser.add_argument("--tasks", nargs="+", default=None, help="default: the RTP task and the retention tasks")
    parser.add_argument("--speeds", action="store_true", help="also time generation with each intervention")
    parser.add_argument("--reuse-speeds", action="store_true",
                        help="take generation tokens/s from the existing docs/results/<tag>.json, measure nothing")
    add_option_flags(parser, option_specs().values(), aliases=False)
    args = parser.parse_args()
    from aura_tl.paths import shared_data_dir

    shared = shared_data_dir()
    if shared is None:
        raise SystemExit("the report reads RTP, PIQA, HellaSwag and WikiText from the shared data folder")
    os.environ["AURA_SHARED_DATA"] = str(shared)
    os.environ.setdefault("AURA_TL_RTP", str(shared / "rtp"))
    args.protocol = report_defaults(shared)
    args.given = given_values(args, option_specs().values())
    args.learn = [parse_learn_spec(text) for text in (args.learn or method_names())]
    args.tasks = args.tasks or [args.rtp_task, *RETENTION_TASKS]
    tag = args.tag or f"{Path(args.model).stem}-{args.device}"
    args.out.mkdir(parents=True, exist_ok=True)
    learned = {} if args.report_only else learn(args, args.out)
    if args.learn_only:
        return
    if args.report_only:
        learned = {n: (path, recorded_seconds(path), m) for n, m, _ in args.learn
                   for path in [args.out / "interventions" / f"{n}.safetensors"]}
    rows = {}
    configs = configurations(args, learned)
    for name in args.order or list(configs):
        if name not in configs:
            raise SystemExit(f"unknown configuration {name}; choose from {list(configs)}")
        if args.report_only:  # write the report from the runs that finished, run nothing; tasks not run read n/a
            if finished(task_dir_of(args.out, name, args.rtp_task)):
                rows[name] = collect(args.out, name, [args.rtp_task, *RETENTION_TASKS])
            continue
        print(f"[report] {name}", flush=True)
        run_lm_eval(args, name, configs[name], args.out)
        rows[name] = collect(args.out, name, [args.rtp_task, *RETENTION_TASKS])
    rows = {name: rows[name] for name in configs if name in rows}
    add_paired(rows, args.out / "runs")
    results = ROOT / "docs" / "results"
    results.mkdir(parents=True, exist_ok=True)
    previous = results / f"{tag}.json"
    speeds = {}
    if args.reuse_speeds and previous.is_file():
        speeds = json.loads(previous.read_text()).get("generation_tokens_per_s", {})
    elif args.speeds:
        speeds = generation_speed(args, learned)
    (results / f"{tag}.json").write_text(json.dumps({"rows": rows, "generation_tokens_per_s": speeds,
                                                     "learn_seconds": {k: v[1] for k, v in learned.items()}},
                                                    indent=1, default=list))
    write_report(args, rows, learned, speeds, results / f"{tag}.md", results / f"{tag}.png")
    print((results / f"{tag}.md").read_text())


if __name__ == "__main__":
    main()
