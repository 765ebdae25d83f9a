"""The retention panel per configuration: word perplexity of the model with each intervention against unsteered, on
every kind of text where an edit may cost more than on long documents (`aura_tl.retention`), paired per text.

The report's slices, none read by calibration: WikiText-2 test documents 0-9 (long windows, then each paragraph
alone), the first `--docs` PIQA / HellaSwag validation documents, and `--prompts` non-toxic RTP prompts of the
`eval` split continued greedily by the unsteered model (`--continuation-tokens`).

    python bench/retention_panel.py --model smollm2-135m --intervention default=out/default.safetensors

With `--held-out N`, two kinds of near-toxic neutral text are added, texts that nothing in learning, gating or
calibration reads (a check that a gate trained to stay closed on the panel's kinds of text did not learn the panel
only; calibration's `near` panel reads other texts of these kinds): the first N ParaDetox human non-toxic rewrites
(polite text on a toxic sentence's subject) and the first N Davidson tweets labelled "neither" (chat-like), each alone
after BOS. `--unit token` states the costs per token (a tweet has ~2 tokens a word, which doubles a change per word).
The ratio's 95 % interval resamples the texts of each kind (paired: the same texts with and without the edit).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from jaxtyping import Float
from tqdm.auto import tqdm

from aura_tl import retention
from aura_tl.backends import hooks_applied
from aura_tl.calibrate import token_logprobs_from_bos, words_per_row
from aura_tl.intervention import Intervention
from aura_tl.models import load_model
from aura_tl.retention import report_slices
from bench.results.paired import paired_bootstrap
from bench.results.runs import split_prompt_kept


def panel_rows(model, docs: int, prompts: int, continuation_tokens: int, wikitext_tokens: int, held_out: int = 0
               ) -> dict[str, list[list[int]]]:
    """Every panel text of the report's slices as token rows (no BOS; each row is scored alone after it), with the
    first `held_out` near-toxic texts of each kind when asked (`aura_tl.retention.NEAR_TOXIC`)."""
    slices = report_slices(docs, held_out)
    return retention.panel_rows(model, retention.wikitext_text(slices.wikitext_docs), slices,
                                text_tokens=wikitext_tokens, tokens=None, prompts=prompts,
                                continuation_tokens=continuation_tokens, near_toxic=held_out > 0)


def row_losses(model, rows: list[list[int]]) -> Float[np.ndarray, "rows"]:
    """Summed -log p of each row's tokens, from BOS."""
    return np.array([-float(p.astype(np.float64).sum()) for p in token_logprobs_from_bos(model, rows, 8)])


def sparing_bos(pairs: list[tuple[str, Callable]]) -> list[tuple[str, Callable]]:
    """The same hooks, with position 0 (BOS) left as the unsteered model computes it (`--spare-bos`: is a cost on
    short texts the edit of the attention-sink position?)."""
    def wrap(fn):
        def hook(activation, hook):
            first = activation[:, :1].clone()
            out = fn(activation, hook)
            out = activation if out is None else out
            out[:, :1] = first
            return out
        return hook
    return [(name, wrap(fn)) for name, fn in pairs]


def intervention_hooks(spec: str) -> tuple[str, list[tuple[str, Callable]]]:
    """`NAME=FILE[@LAMBDA][:np]` (the benches' `--intervention`): the name and the file's forward hooks, at LAMBDA if
    given, leaving marked prompts unsteered with `:np` (`aura_tl.prompt_scope`; whole texts have none)."""
    name, _, path = spec.partition("=")
    try:
        path, prompt_kept = split_prompt_kept(path)
    except ValueError as error:
        raise SystemExit(f"--intervention {spec}: {error}") from None
    path, _, strength = path.partition("@")
    intervention = Intervention.load(path).with_steer_prompt(not prompt_kept)
    return name, (intervention.with_strength(float(strength)) if strength else intervention).fwd_hooks()


def perplexity_ratio(units: Float[np.ndarray, "rows"], base: Float[np.ndarray, "rows"],
                     steered: Float[np.ndarray, "rows"]) -> tuple[float, float, float]:
    """Perplexity per unit (each row's words or tokens) with the edit over without, exp((sum steered - sum base) /
    sum units), and its 95 % interval over resamples of the rows (the same rows for both: paired)."""
    return paired_bootstrap(units, steered - base, lambda w, d: np.exp(d.sum(-1) / w.sum(-1)))


def row_units(model, rows: list[list[int]], unit: str) -> Float[np.ndarray, "rows"]:
    """Each row's count of `unit`: its tokens (each scored after BOS), or its whitespace-separated words (lm-eval's
    `word_perplexity` unit, the one the budget is stated in; at least 1)."""
    if unit == "token":
        return np.array([len(r) for r in rows], float)
    return np.maximum(np.array(words_per_row(model, rows), float), 1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--intervention", action="append", required=True, metavar="NAME=FILE[@LAMBDA]",
                        help="an intervention file (repeatable), optionally at another strength")
    parser.add_argument("--docs", type=int, default=300, help="PIQA / HellaSwag documents")
    parser.add_argument("--prompts", type=int, default=64, help="non-toxic RTP prompts continued by the model")
    parser.add_argument("--continuation-tokens", type=int, default=32)
    parser.add_argument("--wikitext-tokens", type=int, default=8192)
    parser.add_argument("--spare-bos", action="store_true",
                        help="also each intervention with position 0 (BOS) left unsteered")
    parser.add_argument("--held-out", type=int, default=0, metavar="N",
                        help="also N ParaDetox rewrites and N Davidson 'neither' tweets (text no step reads)")
    parser.add_argument("--unit", choices=("word", "token", "both"), default="word",
                        help="perplexity per word, per token, or both (a row each)")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    model = load_model(args.model, device="cpu")
    rows = panel_rows(model, args.docs, args.prompts, args.continuation_tokens, args.wikitext_tokens, args.held_out)
    kinds = list(rows)
    unit_names = ("word", "token") if args.unit == "both" else (args.unit,)
    units = {unit: {name: row_units(model, rs, unit) for name, rs in rows.items()} for unit in unit_names}
    base = {name: row_losses(model, rs) for name, rs in tqdm(rows.items(), desc="unsteered", unit="kind")}
    results = {"model": args.model, "unit": unit_names[0], "texts": {n: len(r) for n, r in rows.items()},
               "configurations": {}}
    print(f"{args.model}: perplexity ratio to unsteered per {' and per '.join(unit_names)} "
          f"(95 % CI over the texts of each kind)\n")
    print("| configuration | " + " | ".join(f"{n} ({results['texts'][n]})" for n in kinds) + " | worst |")
    print("|---|" + "---|" * (len(kinds) + 1))
    for unit in unit_names:
        results["unsteered" if unit == unit_names[0] else f"unsteered per {unit}"] = {
            n: float(np.exp(base[n].sum() / units[unit][n].sum())) for n in rows}
        print(f"| unsteered (ppl per {unit}) | " + " | ".join(f"{np.exp(base[n].sum() / units[unit][n].sum()):.2f}"
                                                           for n in kinds) + " | - |", flush=True)
    for spec in args.intervention:  # each row is printed (and the JSON rewritten) as soon as it is measured
        name, hooks = intervention_hooks(spec)
        for label, pairs in ((name, hooks), *([(f"{name}, BOS spared", sparing_bos(hooks))] if args.spare_bos else [])):
            with hooks_applied(model, pairs):
                losses = {n: row_losses(model, rs) for n, rs in tqdm(rows.items(), desc=label, unit="kind")}
            for unit in unit_names:
                ratios = {n: perplexity_ratio(units[unit][n], base[n], losses[n]) for n in rows}
                named = label if unit == unit_names[0] else f"{label} (per {unit})"
                results["configurations"][named] = ratios
                print(panel_line(named, ratios), flush=True)
            if args.json:
                args.json.write_text(json.dumps(results, indent=1))


def panel_line(label: str, ratios: dict[str, tuple[float, float, float]]) -> str:
    """One table row: each kind's change in % with its interval (in `ratios`' order), and the worst kind."""
    cells = [f"{(r[0] - 1) * 100:+.1f} % ({(r[1] - 1) * 100:+.1f} to {(r[2] - 1) * 100:+.1f})" for r in ratios.values()]
    worst = max(ratios, key=lambda n: ratios[n][0])
    return f"| {label} | " + " | ".join(cells) + f" | {worst} {(ratios[worst][0] - 1) * 100:+.1f} % |"


if __name__ == "__main__":
    main()
