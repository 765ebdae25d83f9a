"""PIQA / HellaSwag accuracy of report runs against unsteered, paired over the documents both answered (for runs
whose RTP task ran elsewhere, e.g. 1,000-document retention checks), as a markdown table.

    python bench/paired_retention.py out/gpu-eval/runs act act_gx2
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.results.paired import PAIRED_RETENTION
from bench.results.runs import add_paired
from bench.results.tables import retention_cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, help="a report's runs folder (holding unsteered/)")
    parser.add_argument("names", nargs="+", help="configurations to compare with unsteered")
    args = parser.parse_args()
    rows = {"unsteered": {}, **{name: {} for name in args.names}}
    add_paired(rows, args.runs)
    print("| configuration | " + " | ".join(f"{label} change, points (95 % CI; docs)"
                                           for _, label in PAIRED_RETENTION.values()) + " |")
    print("|---|" + "---|" * len(PAIRED_RETENTION))
    for name in args.names:
        print(f"| {name} | " + " | ".join(retention_cells(rows[name])) + " |")


if __name__ == "__main__":
    main()
