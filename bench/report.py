"""The results table: unsteered vs AurA vs Det0 vs Damp vs DeStein (+ AurA lambda sweep), run through lm-eval.

Each configuration is one `lm_eval --model aura-hooked` run (the project's tasks: `rtp_toxicity_25`, `piqa_local`,
`hellaswag_local`, `wikitext_local`); its results JSON lands in `<out>/runs/<name>/` and a finished run is never
redone, so an interrupted report resumes where it stopped. Interventions are learned once with `aura-tl learn`
(timed). Then `docs/results/<tag>.md` (table, with bootstrap 95 % intervals from the per-prompt samples) and
`<tag>.png` (toxicity vs perplexity) are written.

    python bench/report.py --prompts 200 --samples-docs 500 --wikitext-docs 10     # CPU, ~1 h
    python bench/report.py --model gemma3-270m.gguf --device cuda --prompts 1000   # GPU
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

ROOT = Path(__file__).resolve().parent.parent
LAMBDAS = (0.25, 0.5, 0.75)


def sh(command: list[str], env: dict | None = None, log: Path | None = None) -> float:
    """Run a command (output to `log`), fail loudly, return its wall time."""
    started = time.perf_counter()
    with open(log, "w") if log else open(os.devnull, "w") as sink:
        done = subprocess.run(command, env={**os.environ, **(env or {})}, stdout=sink, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(command)}" + (f"\nsee {log}" if log else ""))
    return time.perf_counter() - started


def learn(args, out: Path) -> dict[str, tuple[Path, float]]:
    """Learn each method once (skipped when the file exists); returns name -> (file, seconds)."""
    common = ["--model", args.model, "--device", args.device]
    shared_responses = ["--responses", str(out / "interventions" / "responses.safetensors")]  # aura/det0/damp
    specs = {
        "aura": ["--method", "aura", "--data", args.concept_data, "--max-per-class", str(args.max_per_class),
                 *shared_responses],
        "det0": ["--method", "det0", "--data", args.concept_data, "--max-per-class", str(args.max_per_class),
                 "--num-experts", str(args.num_experts), *shared_responses],
        "damp": ["--method", "damp", "--data", args.concept_data, "--max-per-class", str(args.max_per_class),
                 "--num-experts", str(args.num_experts), "--damp-alpha", str(args.damp_alpha), *shared_responses],
        "destein": ["--method", "destein", "--count", str(args.destein_count)]
        + (["--pairs", args.destein_pairs] if args.destein_pairs else []),
    }
    learned = {}
    for name, spec in specs.items():
        path = out / "interventions" / f"{name}.safetensors"
        timing = path.with_suffix(".seconds")
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            seconds = sh([sys.executable, "-m", "aura_tl.cli", "learn", *common, *spec, "-o", str(path)],
                         log=path.with_suffix(".log"))
            timing.write_text(f"{seconds:.1f}")
        learned[name] = (path, float(timing.read_text()))
    return learned


METHODS = ("aura", "det0", "damp", "destein")


def configurations(learned) -> dict[str, str]:
    """name -> extra model_args, in table order."""
    configs = {"unsteered": ""}
    for name in METHODS:
        configs[name] = f",intervention={learned[name][0]}"
    for lam in LAMBDAS:
        configs[f"aura_l{lam}"] = f",intervention={learned['aura'][0]},strength={lam}"
    return configs


TASKS = ("rtp_toxicity_25", "piqa_local", "hellaswag_local", "wikitext_local")


def run_lm_eval(args, name: str, model_args: str, out: Path) -> Path:
    """One lm_eval run per task (lm-eval's --limit is one number for all tasks); finished tasks are skipped."""
    run_dir = out / "runs" / name
    limits = {"rtp_toxicity_25": args.prompts, "piqa_local": args.samples_docs, "hellaswag_local": args.samples_docs,
              "wikitext_local": args.wikitext_docs}
    for task in args.tasks:
        task_dir = run_dir / task
        if any(task_dir.rglob("results_*.json")):
            continue
        task_dir.mkdir(parents=True, exist_ok=True)
        sh(["lm_eval", "--model", "aura-hooked",
            "--model_args", f"model={args.model},max_length={args.max_length}{model_args}", "--device", args.device,
            "--tasks", task, "--limit", str(limits[task]), "--batch_size", str(args.batch_size),
            "--seed", "0", "--log_samples", "--output_path", str(task_dir)],
           env={"AURA_TL_SCORER": args.scorer}, log=task_dir / "lm_eval.log")
    return run_dir


def bootstrap_ci(values: np.ndarray, iters: int = 2000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (iters, len(values)))].mean(1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def rtp_samples(run_dir: Path) -> dict[int, dict]:
    """doc_id -> that prompt's metrics, from lm-eval's `--log_samples` file of the RTP task."""
    samples = next(run_dir.rglob("samples_rtp_toxicity_25_*.jsonl"), None)
    if samples is None:
        return {}
    lines = samples.read_text(encoding="utf-8").split("\n")  # not splitlines(): texts hold U+2028 and the like
    return {r["doc_id"]: r for r in map(json.loads, filter(str.strip, lines))}


def paired_reduction(base: dict[int, dict], other: dict[int, dict], key: str, iters: int = 2000,
                     seed: int = 0) -> dict[str, float]:
    """Reduction factor mean(base) / mean(other) over the prompts both runs scored, with a paired bootstrap 95 %
    interval (prompts resampled jointly, so prompt difficulty cancels), and the same for the difference."""
    ids = sorted(base.keys() & other.keys())
    b = np.array([base[i][key] for i in ids])
    o = np.array([other[i][key] for i in ids])
    pick = np.random.default_rng(seed).integers(0, len(ids), (iters, len(ids)))
    mb, mo = b[pick].mean(1), o[pick].mean(1)
    ratios = mb / np.maximum(mo, 1e-12)
    return {"n": len(ids), "ratio": float(b.mean() / max(o.mean(), 1e-12)),
            "ratio_lo": float(np.percentile(ratios, 2.5)), "ratio_hi": float(np.percentile(ratios, 97.5)),
            "diff": float(o.mean() - b.mean()), "diff_lo": float(np.percentile(mo - mb, 2.5)),
            "diff_hi": float(np.percentile(mo - mb, 97.5))}


def collect(run_dir: Path) -> dict:
    row: dict = {}
    for results_file in run_dir.rglob("results_*.json"):
        data = json.loads(results_file.read_text())
        for task, metrics in data["results"].items():
            for key, value in metrics.items():
                if "," in key and "stderr" not in key:  # "metric,filter": the filter is `none` or `all`
                    row[f"{task}/{key.split(',')[0]}"] = value
    samples = rtp_samples(run_dir)
    if samples:
        probs = np.array([r["toxicity_prob"] for r in samples.values()])
        row["rtp/n_prompts"] = len(probs)
        row["rtp/toxicity_prob_ci"] = bootstrap_ci(probs)
    return row


PAIRED_KEYS = ("toxicity_prob", "expected_max_toxicity")


def add_paired(rows: dict[str, dict], runs: Path) -> None:
    """Each method against unsteered on the same prompts: `paired/<metric>` = reduction factor and difference."""
    base = rtp_samples(runs / "unsteered")
    if not base:
        return
    for name, row in rows.items():
        other = rtp_samples(runs / name)
        if name != "unsteered" and other:
            for key in PAIRED_KEYS:
                row[f"paired/{key}"] = paired_reduction(base, other, key)


def generation_speed(args, learned, rounds: int = 3) -> dict[str, float]:
    """Generation tokens/s (64 prompts x 20 new tokens, greedy, batch 32) without and with each intervention:
    the methods take turns, `rounds` times, and each keeps its median (one pass moves by ~10 % on a shared CPU)."""
    import torch

    from aura_tl.generation import SamplingConfig, generate
    from aura_tl.intervention import Intervention
    from aura_tl.models import load_model

    model = load_model(args.model, device=args.device)
    prompts = [f"Example number {i}: the people next door are" for i in range(64)]
    config = SamplingConfig(max_new_tokens=20)
    generate(model, prompts[:8], config)  # warm-up
    names = ("unsteered", *METHODS)  # aura_l* run AurA's hooks with other alphas
    interventions = {name: Intervention.load(learned[name][0]) for name in names if name != "unsteered"}
    timings: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(rounds):
        for name in names:
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
            skipping = arg in ("--order", "--report-only", "--reuse-speeds")
        if not skipping:
            kept.append(arg)
    return " ".join(kept)


def write_report(args, rows: dict[str, dict], learned, speeds, out_md: Path, out_png: Path) -> None:
    base = rows["unsteered"]

    def fmt(row, key, digits=3):
        value = row.get(key)
        return "n/a" if value is None else f"{value:.{digits}f}"

    def learn_time(name):
        key = name.split("_l")[0]
        return f"{learned[key][1]:.0f}" if key in learned else "-"

    lines = [
        f"# Results: {args.model} ({args.device})", "",
        f"Command: `python bench/report.py {reproducing_arguments(sys.argv[1:])}` (`--report-only` rewrites this "
        "file from finished runs)", "",
        f"RTP: {base.get('rtp/n_prompts', '?')} prompts (shared DecodingTrust RTP split, fixed shuffle), 25 sampled "
        f"continuations of 20 tokens (top-p 0.9), scorer `{args.scorer}`. PIQA / HellaSwag: first "
        f"{args.samples_docs} validation docs. Perplexity: WikiText-2 test, first {args.wikitext_docs} documents, "
        f"window {args.max_length}. Concept data for AurA/Det0/Damp: `{args.concept_data}` "
        f"({args.max_per_class} per class); Det0/Damp k = {args.num_experts}, Damp alpha = {args.damp_alpha}; "
        f"DeStein: {args.destein_count} pairs from `{args.destein_pairs or 'self-induced'}`.", "",
        "| method | tox. prob (95% CI) | exp. max tox. | toxic share | word ppl | PIQA acc | HellaSwag acc_norm "
        "| learn s | gen tok/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        ci = row.get("rtp/toxicity_prob_ci")
        tox = f"{fmt(row, 'rtp_toxicity_25/toxicity_prob')} ({ci[0]:.3f}-{ci[1]:.3f})" if ci else "n/a"
        speed = speeds.get(name)
        lines.append(
            f"| {name} | {tox} | {fmt(row, 'rtp_toxicity_25/expected_max_toxicity')} | "
            f"{fmt(row, 'rtp_toxicity_25/toxic_fraction')} | {fmt(row, 'wikitext_local/word_perplexity', 2)} | "
            f"{fmt(row, 'piqa_local/acc')} | {fmt(row, 'hellaswag_local/acc_norm')} | {learn_time(name)} | "
            f"{f'{speed:.0f}' if speed else '-'} |")
    lines += ["", "Against unsteered on the same prompts (paired bootstrap over prompts, 2,000 resamples, 95 % "
              "intervals): reduction factor = unsteered mean / method mean; difference = method - unsteered.", "",
              "| method | tox. prob reduction | tox. prob difference | exp. max tox. reduction "
              "| exp. max tox. difference |", "|---|---|---|---|---|"]
    for name, row in rows.items():
        cells = []
        for key in PAIRED_KEYS:
            p = row.get(f"paired/{key}")
            cells += ([f"{p['ratio']:.2f}x ({p['ratio_lo']:.2f}-{p['ratio_hi']:.2f})",
                       f"{p['diff']:+.3f} ({p['diff_lo']:+.3f} to {p['diff_hi']:+.3f})"] if p else ["-", "-"])
        if name != "unsteered":
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    out_md.write_text("\n".join(lines) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    near = [r["wikitext_local/word_perplexity"] for r in rows.values() if r.get("wikitext_local/word_perplexity")]
    if not near:  # a toxicity-only run (--tasks rtp_toxicity_25): the table says it all
        return
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    zoom = ax.inset_axes([0.42, 0.42, 0.36, 0.55])  # the neuron methods sit within a few perplexity points
    sweep = [(rows[n].get("wikitext_local/word_perplexity"), rows[n].get("rtp_toxicity_25/toxicity_prob"))
             for n in ["unsteered"] + [f"aura_l{lam}" for lam in LAMBDAS] + ["aura"] if n in rows]
    for axes in (ax, zoom):
        for i, (name, row) in enumerate(rows.items()):
            x, y = row.get("wikitext_local/word_perplexity"), row.get("rtp_toxicity_25/toxicity_prob")
            if x is None or y is None:
                continue
            ci = row.get("rtp/toxicity_prob_ci")
            marker = "o" if not name.startswith("aura_l") else "s"
            axes.errorbar(x, y, yerr=[[y - ci[0]], [ci[1] - y]] if ci else None, fmt=marker, capsize=3,
                          color=f"C{i}", label=name if axes is ax else None)
        axes.plot(*zip(*sweep), color="gray", lw=0.8, ls="--", label="AurA lambda 0 -> 1" if axes is ax else None)
    low = min(near)
    zoom.set_xlim(low - 0.5, low * 1.1)
    inside = [r["rtp/toxicity_prob_ci"] for r in rows.values()
              if r.get("rtp/toxicity_prob_ci") and r.get("wikitext_local/word_perplexity", 1e9) <= low * 1.1]
    zoom.set_ylim(min(c[0] for c in inside) - 0.03, max(c[1] for c in inside) + 0.03)
    zoom.tick_params(labelsize=7)
    ax.indicate_inset_zoom(zoom, edgecolor="gray")
    ax.set_xlabel("WikiText-2 word perplexity")
    ax.set_ylabel("toxicity probability (RTP, 25 samples)")
    ax.set_title(f"{args.model}: toxicity vs perplexity (95 % intervals over prompts)")
    ax.legend(fontsize=7, loc="lower left")
    fig.savefig(out_png, dpi=130, bbox_inches="tight")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tag", default=None, help="file name in docs/results (default: model-device)")
    parser.add_argument("--out", type=Path, default=Path("out/report"))
    parser.add_argument("--prompts", type=int, default=200)
    parser.add_argument("--samples-docs", type=int, default=500)
    parser.add_argument("--wikitext-docs", type=int, default=10)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--scorer", default="jigsaw-bilstm")
    parser.add_argument("--concept-data", default=None, help="default: shared Davidson tweets (see README)")
    parser.add_argument("--max-per-class", type=int, default=1000)
    parser.add_argument("--num-experts", type=int, default=500)
    parser.add_argument("--damp-alpha", type=float, default=0.5)
    parser.add_argument("--destein-count", type=int, default=200)
    parser.add_argument("--destein-pairs", default=None, help="default: shared ParaDetox")
    parser.add_argument("--order", nargs="*", default=None, help="configurations to run, in this order")
    parser.add_argument("--report-only", action="store_true", help="tabulate finished runs, run nothing more")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS,
                        help="a subset, e.g. only rtp_toxicity_25 for a larger toxicity sample")
    parser.add_argument("--reuse-speeds", action="store_true",
                        help="take generation tokens/s from the existing docs/results/<tag>.json, measure nothing")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from aura_tl.paths import shared_data_dir

    shared = shared_data_dir()
    if shared is None:
        raise SystemExit("the report reads RTP, PIQA, HellaSwag and WikiText from the shared data folder")
    os.environ["AURA_SHARED_DATA"] = str(shared)
    # not ParaDetox: its toxic side is lower-cased and space-tokenised, its rewrites are not, so 93 % of SmolLM2's
    # neurons separate the two by format (AUROC > 0.5) and AurA would damp nearly all of them
    args.concept_data = args.concept_data or str(shared / "davidson" / "labeled_data.csv")
    args.destein_pairs = args.destein_pairs or str(shared / "paradetox" / "paradetox.tsv")
    tag = args.tag or f"{Path(args.model).stem}-{args.device}"
    args.out.mkdir(parents=True, exist_ok=True)
    learned = learn(args, args.out)
    learned["unsteered"] = (None, 0.0)
    rows = {}
    configs = configurations(learned)
    for name in args.order or list(configs):
        if name not in configs:
            raise SystemExit(f"unknown configuration {name}; choose from {list(configs)}")
        if args.report_only:  # write the report from the runs that finished, run nothing
            if all(any((args.out / "runs" / name / t).rglob("results_*.json")) for t in args.tasks):
                rows[name] = collect(args.out / "runs" / name)
            continue
        print(f"[report] {name}", flush=True)
        rows[name] = collect(run_lm_eval(args, name, configs[name], args.out))
    rows = {name: rows[name] for name in configs if name in rows}
    add_paired(rows, args.out / "runs")
    results = ROOT / "docs" / "results"
    results.mkdir(parents=True, exist_ok=True)
    previous = results / f"{tag}.json"
    if args.reuse_speeds:  # none when there is no earlier file
        speeds = json.loads(previous.read_text())["generation_tokens_per_s"] if previous.is_file() else {}
    else:
        speeds = generation_speed(args, learned)
    (results / f"{tag}.json").write_text(json.dumps({"rows": rows, "generation_tokens_per_s": speeds,
                                                     "learn_seconds": {k: v[1] for k, v in learned.items()}},
                                                    indent=1, default=list))
    write_report(args, rows, learned, speeds, results / f"{tag}.md", results / f"{tag}.png")
    print((results / f"{tag}.md").read_text())


if __name__ == "__main__":
    main()
