"""Markdown tables of report rows (`bench.results.runs.collect` + `add_paired`): the metrics of every
configuration, and each against unsteered on the same prompts and documents."""

from __future__ import annotations

from bench.results.paired import PAIRED_KEYS, PAIRED_RETENTION
from bench.results.runs import PPL, base_name

PAIRED_NOTE = ("Against unsteered on the same prompts (paired bootstrap over prompts, 2,000 resamples, 95 % intervals): "
               "reduction factor = unsteered mean / configuration mean; PIQA / HellaSwag: accuracy change in points on "
               "the documents both answered (paired over documents).")


def number(row: dict, key: str, digits: int = 3) -> str:
    value = row.get(key)
    return "n/a" if value is None else f"{value:.{digits}f}"


def ppl_change(row: dict, base: dict) -> str:
    if row.get(PPL) is None or base.get(PPL) is None:
        return "n/a"
    return f"{100 * (row[PPL] / base[PPL] - 1):+.1f} %"


def retention_cells(row: dict) -> list[str]:
    """Per retention task: the paired accuracy change in points with its interval and document count, or '-'."""
    cells = []
    for task, (metric, _) in PAIRED_RETENTION.items():
        p = row.get(f"paired/{task}/{metric}")
        cells.append(f"{100 * p['diff']:+.1f} ({100 * p['diff_lo']:+.1f} to {100 * p['diff_hi']:+.1f}; {p['n']})"
                     if p else "-")
    return cells


def metrics_table(rows: dict[str, dict], rtp: str, learn_seconds: dict[str, float],
                  speeds: dict[str, float]) -> list[str]:
    """One line per configuration: toxicity (with its bootstrap interval), perplexity, PIQA, HellaSwag, timings."""
    base = rows.get("unsteered", {})
    lines = ["| configuration | tox. prob (95% CI) | toxic rate | exp. max tox. | word ppl | ppl change | PIQA acc "
             "| HellaSwag acc_norm | learn s | gen tok/s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, row in rows.items():
        ci = row.get("rtp/toxicity_prob_ci")
        tox = f"{number(row, f'{rtp}/toxicity_prob')} ({ci[0]:.3f}-{ci[1]:.3f})" if ci else "n/a"
        speed, seconds = speeds.get(name), learn_seconds.get(base_name(name))
        lines.append(
            f"| {name} | {tox} | {number(row, f'{rtp}/toxic_fraction')} | "
            f"{number(row, f'{rtp}/expected_max_toxicity')} | {number(row, PPL, 2)} | {ppl_change(row, base)} | "
            f"{number(row, 'piqa_local/acc')} | {number(row, 'hellaswag_local/acc_norm')} | "
            f"{f'{seconds:.0f}' if seconds else '-'} | {f'{speed:.0f}' if speed else '-'} |")
    return lines


def paired_table(rows: dict[str, dict]) -> list[str]:
    """One line per steered configuration: reduction factors, the toxicity difference and the retention changes."""
    lines = ["| configuration | " + " | ".join(f"{k.replace('_', ' ')} reduction" for k in PAIRED_KEYS)
             + " | tox. prob difference | " + " | ".join(f"{label} points (docs)" for _, label in PAIRED_RETENTION.values())
             + " |", "|---|" + "---|" * (len(PAIRED_KEYS) + 1 + len(PAIRED_RETENTION))]
    for name, row in rows.items():
        if name == "unsteered":
            continue
        cells = []
        for key in PAIRED_KEYS:
            p = row.get(f"paired/{key}")
            cells.append(f"{p['ratio']:.2f}x ({p['ratio_lo']:.2f}-{p['ratio_hi']:.2f})" if p else "-")
        p = row.get("paired/toxicity_prob")
        cells.append(f"{p['diff']:+.3f} ({p['diff_lo']:+.3f} to {p['diff_hi']:+.3f})" if p else "-")
        lines.append(f"| {name} | " + " | ".join(cells + retention_cells(row)) + " |")
    return lines
