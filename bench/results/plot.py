"""The toxicity-perplexity front of report rows as a PNG."""

from __future__ import annotations

from pathlib import Path

from bench.results.runs import PPL, base_name, parse_config


def plot_front(rows: dict[str, dict], rtp: str, out_png: Path, *, title: str, split: str, ppl_budget: float) -> None:
    """Toxicity probability vs perplexity: one curve per learned NAME through its strengths, from unsteered, and the
    perplexity budget as a line. Nothing is drawn for a toxicity-only run (the table says it all)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = rows.get("unsteered", {})
    if base.get(PPL) is None:
        return
    fig, ax = plt.subplots(figsize=(8, 5))
    start = (base[PPL], base.get(f"{rtp}/toxicity_prob"))
    ax.plot(*start, "ko", label="unsteered")
    for i, name in enumerate(dict.fromkeys(base_name(n) for n in rows if n != "unsteered")):
        points = []
        for config, row in rows.items():
            if base_name(config) == name and row.get(PPL) is not None:
                strength = parse_config(config).strength
                points.append((strength, row[PPL], row.get(f"{rtp}/toxicity_prob"), row.get("rtp/toxicity_prob_ci")))
        points.sort()
        xs, ys = [start[0]] + [p[1] for p in points], [start[1]] + [p[2] for p in points]
        ax.plot(xs, ys, "-", color=f"C{i}", lw=1, alpha=0.7)
        for strength, x, y, ci in points:
            ax.errorbar(x, y, yerr=[[y - ci[0]], [ci[1] - y]] if ci else None, fmt="o", color=f"C{i}", capsize=2,
                        ms=4 + 3 * strength, label=name if strength == points[-1][0] else None)
    budget = base[PPL] * (1 + ppl_budget / 100)
    ax.axvline(budget, color="gray", ls="--", lw=1)
    ax.text(budget, ax.get_ylim()[1], f" +{ppl_budget:g} % perplexity", va="top", fontsize=8, color="gray")
    ax.set_xlabel("WikiText-2 word perplexity")
    ax.set_ylabel(f"toxicity probability ({rtp}, {split} split)")
    ax.set_title(f"{title}: toxicity vs perplexity (marker size = strength; 95 % intervals)")
    ax.legend(fontsize=7, loc="best")
    fig.savefig(out_png, dpi=130, bbox_inches="tight")
