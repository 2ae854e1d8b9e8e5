"""``meobench run``: measure every case of a scenario and write its results."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any, Optional

import pandas as pd
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from meobench.calibrate import calibrations_for
from meobench.cases import Case, CaseGroup, expand
from meobench.cli.common import (
    EXIT_FAILED_CASES,
    EXIT_INTERRUPTED,
    app,
    check_device,
    console,
    device_option,
    error_console,
    out_option,
    reports_errors,
    scenario_argument,
)
from meobench.cli.report import print_report_files
from meobench.environment import collect_environment
from meobench.errors import MeobenchError
from meobench.report import TABLE_COLUMNS, results_frame, results_table, status_counts
from meobench.report_pages import write_reports
from meobench.results import CaseResult
from meobench.roofline import fill_roofline
from meobench.rundir import RunDirectory, default_run_dir
from meobench.runner import Runner, fill_speedups, skip_reason
from meobench.scenario import Scenario, dump_scenario, load_scenario
from meobench.timing import timer_name


@app.command()
@reports_errors
def run(
    scenario: Path = scenario_argument(),
    out: Optional[Path] = out_option(),
    device: Optional[str] = device_option(),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="List the cases and their count, then stop without measuring."
    ),
    allow_failures: bool = typer.Option(
        False, "--allow-failures", help="Exit with status 0 even when some cases failed or produced NaN."
    ),
    report: bool = typer.Option(
        False, "--report", help="Also write report.html, report.md and plots/ in the run directory (see `report`)."
    ),
    trace: bool = typer.Option(
        False,
        "--trace",
        help="Also write each case's profiler trace (traces/, chrome/), top operators (operators/) "
        "and memory timeline (memory/) into the run directory.",
    ),
) -> None:
    """Run a scenario: build each case's layers, measure them, and write a table, CSV and JSON."""
    check_device(device)
    spec = load_scenario(scenario)
    if trace and spec.measure.profile_active < 1:
        raise MeobenchError(
            f"{scenario}: measure.profile_active is {spec.measure.profile_active}, so --trace would record nothing; "
            "set it to 1 or more."
        )
    cases = expand(spec, device)
    if dry_run:
        _print_cases(cases, spec)
        return
    run_dir = RunDirectory(out or default_run_dir(spec.name))
    frame, interrupted = run_and_report(scenario, spec, cases, run_dir, report=report, trace=trace)
    if interrupted:
        raise typer.Exit(EXIT_INTERRUPTED)
    if not allow_failures and frame["status"].isin(["failed", "nan"]).any():
        raise typer.Exit(EXIT_FAILED_CASES)


def run_and_report(
    scenario_path: Path,
    spec: Scenario,
    cases: list[Case],
    run_dir: RunDirectory,
    report: bool = False,
    count_only: bool = False,
    columns: tuple[tuple[str, str, str], ...] = TABLE_COLUMNS,
    trace: bool = False,
) -> tuple[pd.DataFrame, bool]:
    """Measure ``cases``, write the run directory and print the table; return the rows and whether Ctrl-C stopped it.

    ``report`` also writes report.html, report.md and plots/ in the run directory.
    ``count_only`` fills only parameters and FLOP figures (see Runner), and
    ``columns`` picks the terminal table's columns. ``trace`` writes each case's
    profiler trace, top operators and memory timeline into the run directory.
    """
    devices = sorted({case.group.device for case in cases})
    environment = run_environment(scenario_path, spec, devices)
    results: list[CaseResult] = []
    runner = Runner(spec, count_only=count_only, trace_dir=run_dir.path if trace else None)
    interrupted = _measure_all(runner, cases, results, run_dir)

    fill_speedups(results)
    calibrations = calibrations_for(devices, spec.threads)
    fill_roofline(results, calibrations)
    environment["calibration"] = {device: calibration.to_json() for device, calibration in calibrations.items()}
    run_dir.write_final(results, dump_scenario(spec), environment, complete=not interrupted)
    frame = results_frame(results)
    console.print(results_table(frame, title=f"{spec.name}: {len(results)} of {len(cases)} cases", columns=columns))
    counts = ", ".join(f"{count} {status}" for status, count in status_counts(frame).items())
    console.print(f"[bold]{counts}[/]. Results: {run_dir.csv_path} and {run_dir.json_path}", highlight=False)
    for _, row in frame[frame["status"].isin(["failed", "nan"])].iterrows():
        error_console.print(f"[red]{row['status']}:[/] {row['case_id']}: {row['error']}", highlight=False)
    if report and results:
        print_report_files(write_reports(run_dir.path))
    if interrupted:
        error_console.print(f"Interrupted after {len(results)} of {len(cases)} cases; finished cases are saved.")
    return frame, interrupted


def run_environment(scenario_path: Path, spec: Scenario, devices: list[str]) -> dict[str, Any]:
    """Collect the environment a run records, with the timing settings and the timer used on each device."""
    timing = {**spec.measure.model_dump(), "timer": {device: timer_name(device) for device in devices}}
    return collect_environment(devices, scenario_path=scenario_path, timing=timing, threads=spec.threads)


def _measure_all(runner: Runner, cases: list[Case], results: list[CaseResult], run_dir: RunDirectory) -> bool:
    """Run the cases with a progress bar; return True when Ctrl-C stopped the sweep."""
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=error_console, transient=False) as progress:
        task = progress.add_task("starting", total=len(cases))

        def show(case: Case) -> None:
            progress.update(task, description=case.case_id)

        try:
            for result in runner.iterate(cases, on_case_start=show):
                results.append(result)
                run_dir.append(result)
                progress.advance(task)
        except KeyboardInterrupt:
            # A second Ctrl-C while the files are written would lose them.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            return True
    return False


def _print_cases(cases: list[Case], scenario: Scenario) -> None:
    """Print the case list with the reason each skipped case will be skipped."""
    table = Table(title=f"{scenario.name}: {len(cases)} cases (dry run, nothing measured)")
    table.add_column("#", justify="right")
    table.add_column("case id")
    table.add_column("skipped because")
    reasons: dict[CaseGroup, str | None] = {}
    for index, case in enumerate(cases, start=1):
        if case.group not in reasons:
            reasons[case.group] = skip_reason(case.group, scenario)
        table.add_row(str(index), case.case_id, reasons[case.group] or "")
    console.print(table)
    skipped = sum(1 for case in cases if reasons[case.group])
    console.print(f"{len(cases)} cases: {len(cases) - skipped} to run, {skipped} to skip.")
