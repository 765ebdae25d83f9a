"""PIQA / HellaSwag accuracy of report runs against unsteered, paired over the documents both answered (for runs
whose RTP task ran elsewhere, e.g. 1,000-document retention checks), as a markdown table.

    python bench/paired_retention.py out/gpu-eval/runs act act_gx2
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

HERE = Path(__file__).resolve().parent


def report_module():
    """bench/report.py, whose sample readers and paired bootstrap this reuses."""
    spec = importlib.util.spec_from_file_location("bench_report", HERE / "report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, help="a report's runs folder (holding unsteered/)")
    parser.add_argument("names", nargs="+", help="configurations to compare with unsteered")
    args = parser.parse_args()
    report = report_module()
    rows = {"unsteered": {}, **{name: {} for name in args.names}}
    report.add_paired(rows, args.runs)
    print("| configuration | " + " | ".join(f"{label} change, points (95 % CI; docs)"
                                           for _, label in report.PAIRED_RETENTION.values()) + " |")
    print("|---|" + "---|" * len(report.PAIRED_RETENTION))
    for name in args.names:
        cells = []
        for task, (metric, _) in report.PAIRED_RETENTION.items():
            p = rows[name].get(f"paired/{task}/{metric}")
            cells.append(f"{100 * p['diff']:+.1f} ({100 * p['diff_lo']:+.1f} to {100 * p['diff_hi']:+.1f}; {p['n']})"
                         if p else "-")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
