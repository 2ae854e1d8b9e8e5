"""Print the kernel latency goals, the measured ratio and pass or fail, from one run's results.csv.

Usage: python scripts/kernel_goals.py reports/kernels/<timestamp>/results.csv [--meo-strategy auto]
Exits with 0 when every goal passes, 1 when one fails, 2 when the results lack a needed row.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

from meobench.errors import MeobenchError
from meobench.kernel_goals import check_kernel_goals


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results_csv", type=Path, help="results.csv of a run of scenarios/kernels.yaml")
    parser.add_argument("--meo-strategy", default="auto", help="meo-sequence strategy the MEO goals read (default: auto)")
    args = parser.parse_args()
    console = Console()
    try:
        frame = pd.read_csv(args.results_csv)
        checks = check_kernel_goals(frame, args.meo_strategy)
    except (OSError, MeobenchError) as error:
        Console(stderr=True).print(f"error: {error}", highlight=False)
        return 2

    table = Table(title=f"Kernel goals: {args.results_csv}")
    for header in ("goal", "k", "measured (x)", "limit (x)", "result", "latencies"):
        table.add_column(header)
    for check in checks:
        bound = f">= {check.limit:g}" if check.at_least else f"<= {check.limit:g}"
        result = "[green]pass[/]" if check.passed else "[red]fail[/]"
        table.add_row(check.goal, str(check.top_k), f"{check.measured:.3f}", bound, result, check.detail)
    console.print(table)
    threads = ", ".join(str(value) for value in sorted(frame["threads"].dropna().unique()))
    failed = sum(not check.passed for check in checks)
    console.print(f"{len(checks) - failed} of {len(checks)} goals met; torch threads: {threads}.", highlight=False)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
