"""Report runs paired against any one of them (not only unsteered): per toxicity measure, the reduction factor
mean(base) / mean(other) over the prompts both scored, with a paired bootstrap 95 % interval (and PIQA / HellaSwag
accuracy changes where both ran them), as a markdown table.

    python bench/paired_runs.py out/eval300/runs tcont tcont:np tcont@6:np
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.results.paired import PAIRED_KEYS, PAIRED_RETENTION
from bench.results.runs import add_paired

LABELS = {"toxicity_prob": "tox. probability", "toxic_fraction": "toxic rate", "expected_max_toxicity": "expected max"}


def cell(stat: dict | None, scale: float = 1.0, suffix: str = "x", key: str = "ratio") -> str:
    if stat is None:
        return "-"
    return (f"{stat[key] * scale:.2f}{suffix} ({stat[key + '_lo'] * scale:.2f}-{stat[key + '_hi'] * scale:.2f}), "
            f"n {stat['n']}")


def paired_rows(runs: Path, base: str, others: list[str]) -> list[str]:
    """The markdown table: one row per other run against `base`."""
    rows = {name: {} for name in others}
    add_paired(rows, runs, against=base)
    tasks = [(task, metric, label) for task, (metric, label) in PAIRED_RETENTION.items()
             if any(f"paired/{task}/{metric}" in row for row in rows.values())]
    head = [f"{base} mean / mean", *(LABELS[k] for k in PAIRED_KEYS), *(f"{label} points" for *_, label in tasks)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, row in rows.items():
        cells = [cell(row.get(f"paired/{key}")) for key in PAIRED_KEYS]
        cells += [cell(row.get(f"paired/{task}/{metric}"), 100, "", "diff") for task, metric, _ in tasks]
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, help="a report's runs folder")
    parser.add_argument("base", help="the run the others are paired against")
    parser.add_argument("others", nargs="+")
    args = parser.parse_args()
    missing = [n for n in [args.base, *args.others] if not (args.runs / n).is_dir()]
    if missing:
        raise SystemExit(f"no such run in {args.runs}: {', '.join(missing)}")
    print("\n".join(paired_rows(args.runs, args.base, args.others)))


if __name__ == "__main__":
    main()
