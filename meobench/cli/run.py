"""``meobench run``: measure every case of a scenario and write its results."""

from __future__ import annotations

import contextlib
import math
import shlex
import signal
from pathlib import Path
from typing import Any, Iterator, Optional

import pandas as pd
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from meobench.calibrate import calibrations_for
from meobench.cases import Case, CaseGroup, count_cases, expand
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
from meobench.devices import unavailable_reason
from meobench.environment import collect_environment
from meobench.errors import MeobenchError
from meobench.failures import FAILURE_STATUSES
from meobench.interrupts import StopRequest
from meobench.isolation import IsolatedRunner, isolate_by_default
from meobench.report import TABLE_COLUMNS, results_frame, results_table, status_counts
from meobench.report_pages import write_reports
from meobench.results import CaseResult
from meobench.resume import ResumePlan, environment_fingerprint, plan_resume, settings_fingerprint
from meobench.roofline import fill_roofline
from meobench.rundir import RunDirectory, default_run_dir
from meobench.runner import Runner, fill_speedups, skip_reason
from meobench.scenario import Scenario, dump_scenario, load_scenario
from meobench.timing import NOISY_REL_IQR, timer_name

# Sweeps above this many cases are refused unless --max-cases is raised: at a few seconds
# per case, 5000 cases already take most of a day.
DEFAULT_MAX_CASES = 5000
# Distinct skip reasons printed after a run; the rest are counted.
SKIP_REASONS_SHOWN = 5


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
        False,
        "--allow-failures",
        help="Exit with status 0 even when some cases failed, ran out of memory, timed out or produced NaN.",
    ),
    resume: Optional[Path] = typer.Option(
        None,
        "--resume",
        help="Continue the run in this directory: keep its finished cases (same case parameters, settings "
        "and environment fingerprint) and run the rest.",
    ),
    retry_failed: bool = typer.Option(
        False, "--retry-failed", help="With --resume, run the failed, oom, nan and timeout cases again."
    ),
    isolate: Optional[bool] = typer.Option(
        None,
        "--isolate/--no-isolate",
        help="Run each case in its own child process, killed when it overruns its time limit. "
        "Default: on when a case runs on CUDA, off otherwise.",
    ),
    time_limit: Optional[float] = typer.Option(
        None, "--time-limit", help="Wall-clock limit per case, in seconds, replacing measure.time_limit_s."
    ),
    strict: bool = typer.Option(
        False,
        "--strict",
        help="Stop with an error when a device of the sweep is absent, instead of skipping its cases. "
        "A device named with --device is always required.",
    ),
    max_cases: int = typer.Option(
        DEFAULT_MAX_CASES, "--max-cases", min=1, help="Refuse sweeps with more cases than this."
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
    _check_options(out, resume, retry_failed, time_limit)
    spec = load_scenario(scenario)
    if trace and spec.measure.profile_active < 1:
        raise MeobenchError(
            f"{scenario}: measure.profile_active is {spec.measure.profile_active}, so --trace would record nothing; "
            "set it to 1 or more."
        )
    if time_limit is not None:
        spec = spec.model_copy(update={"measure": spec.measure.model_copy(update={"time_limit_s": time_limit})})
    total = count_cases(spec, device)
    if total > max_cases:
        raise MeobenchError(
            f"{scenario}: the sweep has {total} cases, more than --max-cases {max_cases}; "
            "narrow the sweep or raise --max-cases."
        )
    cases = expand(spec, device)
    devices = sorted({case.group.device for case in cases})
    if strict or device is not None:
        # A device named with --device is a request: its absence is an error, not a skipped case.
        require_devices(devices, scenario, device)
    if dry_run:
        _print_cases(cases, spec)
        return

    # The run directory is checked before any case runs.
    run_dir = RunDirectory.reopen(resume) if resume else RunDirectory.create(out or default_run_dir(spec.name))
    frame, interrupted = run_and_report(
        scenario, spec, cases, run_dir, report=report, resume=resume is not None, retry_failed=retry_failed,
        isolate=isolate, trace=trace,
    )  # fmt: skip
    resume_command = _resume_command(scenario, run_dir, device, isolate, time_limit)
    if interrupted:
        error_console.print(f"Resume with:\n  {resume_command}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_INTERRUPTED)
    if frame["status"].isin(FAILURE_STATUSES).any():
        error_console.print(
            f"Run the failed cases again with:\n  {resume_command} --retry-failed", highlight=False, soft_wrap=True
        )
        if not allow_failures:
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
    resume: bool = False,
    retry_failed: bool = False,
    isolate: bool | None = None,
) -> tuple[pd.DataFrame, bool]:
    """Measure ``cases``, write the run directory and print the table; return the rows and whether Ctrl-C stopped it.

    ``report`` also writes report.html, report.md and plots/ in the run directory.
    ``count_only`` fills only parameters and FLOP figures (see Runner), and
    ``columns`` picks the terminal table's columns. ``trace`` writes each case's
    profiler trace, top operators and memory timeline into the run directory. ``resume`` keeps the finished
    cases already in ``run_dir`` (``retry_failed``: except failed ones). ``isolate``
    runs each case in a child process; None decides by device. Counting never isolates.
    """
    devices = sorted({case.group.device for case in cases})
    environment = run_environment(scenario_path, spec, devices)
    fingerprints = {
        "settings_fingerprint": settings_fingerprint(spec),
        "environment_fingerprint": environment_fingerprint(environment),
    }
    finished: list[CaseResult] = []
    to_run = cases
    if resume:
        plan = plan_resume(run_dir.read_records(), cases, spec, fingerprints, retry_failed)
        run_dir.replace_records(plan.kept_records, plan.superseded)
        _print_resume_plan(plan, run_dir)
        finished, to_run = plan.finished, plan.to_run

    use_isolation = isolate if isolate is not None else isolate_by_default(devices)
    trace_dir = run_dir.path if trace else None
    if use_isolation and not count_only:
        runner: Runner | IsolatedRunner = IsolatedRunner(spec, trace_dir=trace_dir)
    else:
        runner = Runner(spec, count_only=count_only, trace_dir=trace_dir)
    new_results: list[CaseResult] = []
    try:
        _measure_all(runner, to_run, new_results, run_dir, fingerprints)
    finally:
        # On Ctrl-C and on any error too: the files show what finished.
        results = _in_sweep_order(finished + new_results, cases)
        with _sigint_ignored():
            fill_speedups(results)
            calibrations = calibrations_for(devices, spec.threads)
            fill_roofline(results, calibrations)
            environment["calibration"] = {device: calibration.to_json() for device, calibration in calibrations.items()}
            run_dir.write_final(results, dump_scenario(spec), environment, complete=len(results) == len(cases))

    frame = results_frame(results)
    console.print(results_table(frame, title=f"{spec.name}: {len(results)} of {len(cases)} cases", columns=columns))
    counts = ", ".join(f"{count} {status}" for status, count in status_counts(frame).items())
    console.print(f"[bold]{counts}[/]. Results: {run_dir.csv_path} and {run_dir.json_path}", highlight=False)
    _print_failures(frame)
    _print_skips_and_noise(frame)
    if report and results:
        print_report_files(write_reports(run_dir.path))
    interrupted = len(new_results) < len(to_run)
    if interrupted:
        error_console.print(f"Interrupted after {len(results)} of {len(cases)} cases; finished cases are saved.")
    return frame, interrupted


def run_environment(scenario_path: Path, spec: Scenario, devices: list[str]) -> dict[str, Any]:
    """Collect the environment a run records, with the timing settings and the timer used on each device."""
    timing = {**spec.measure.model_dump(), "timer": {device: timer_name(device) for device in devices}}
    return collect_environment(
        devices, scenario_path=scenario_path, timing=timing, threads=spec.threads, cpu_allocator=spec.cpu_allocator
    )


def _check_options(
    out: Optional[Path], resume: Optional[Path], retry_failed: bool, time_limit: Optional[float]
) -> None:
    """Reject option combinations and values that cannot work, before the scenario is read."""
    if resume is not None and out is not None:
        raise MeobenchError("--out and --resume were both given; --resume DIR writes into DIR, so drop --out.")
    if retry_failed and resume is None:
        raise MeobenchError("--retry-failed needs --resume DIR, the run whose failed cases to run again.")
    if time_limit is not None and not (math.isfinite(time_limit) and time_limit > 0):
        raise MeobenchError(f"--time-limit {time_limit:g}: the limit must be a positive number of seconds.")


def require_devices(devices: list[str], scenario: Path, device_option: Optional[str]) -> None:
    """Raise MeobenchError for the first absent device: with --device, or for the sweep's devices with --strict."""
    for name in devices:
        reason = unavailable_reason(name)
        if reason is None:
            continue
        if device_option:
            raise MeobenchError(
                f"--device {device_option}: {reason}. Name a device this machine has, "
                "or --device auto to take the best one present."
            )
        raise MeobenchError(
            f"{scenario}: sweep.device: {reason}. With --strict an absent device is an error; "
            "remove it from the sweep, or drop --strict to skip its cases."
        )


def _measure_all(
    runner: Runner | IsolatedRunner,
    cases: list[Case],
    results: list[CaseResult],
    run_dir: RunDirectory,
    fingerprints: dict[str, str],
) -> None:
    """Run the cases with a progress bar, appending each result to ``results`` and results.jsonl.

    The first Ctrl-C stops the sweep after the running case, the second at once; either
    way this returns normally with the finished cases in ``results``.
    """
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )

    def announce_stop() -> None:
        error_console.print("Stopping after the running case; press Ctrl-C again to stop now.")

    with Progress(*columns, console=error_console, transient=False) as progress, StopRequest(announce_stop) as stop:
        task = progress.add_task("starting", total=len(cases))

        def show(case: Case) -> None:
            progress.update(task, description=case.case_id)

        try:
            for result in runner.iterate(cases, on_case_start=show):
                with stop.protected():
                    results.append(result)
                    run_dir.append(result, **fingerprints)
                progress.advance(task)
                if stop.requested:
                    return
        except KeyboardInterrupt:
            return


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Ignore Ctrl-C while the result files are written, so a late one cannot leave them half written."""
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread, where Ctrl-C is not delivered anyway
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _in_sweep_order(results: list[CaseResult], cases: list[Case]) -> list[CaseResult]:
    position = {case.case_id: index for index, case in enumerate(cases)}
    return sorted(results, key=lambda result: position[result.case.case_id])


def _print_failures(frame: pd.DataFrame) -> None:
    """Print the cases that failed, ran out of memory, timed out or produced NaN."""
    failed = frame[frame["status"].isin(FAILURE_STATUSES)]
    if failed.empty:
        return
    counts = ", ".join(f"{count} {status}" for status, count in failed["status"].value_counts().items())
    error_console.print(f"[red]{len(failed)} of {len(frame)} cases did not finish ({counts}):[/]", highlight=False)
    for _, row in failed.iterrows():
        error_console.print(f"  [red]{row['status']}[/] {row['case_id']}: {row['error']}", highlight=False)


def _print_skips_and_noise(frame: pd.DataFrame) -> None:
    """Print why cases were skipped, one line per reason, and how many measured rows are noisy."""
    skipped = frame[frame["status"] == "skipped"]
    if not skipped.empty:
        console.print(f"{len(skipped)} of {len(frame)} cases skipped:", highlight=False)
        for reason, count in skipped["error"].value_counts().head(SKIP_REASONS_SHOWN).items():
            console.print(f"  {count} x {reason}", highlight=False)
        hidden = skipped["error"].nunique() - SKIP_REASONS_SHOWN
        if hidden > 0:
            console.print(f"  and {hidden} more reasons; see the error column of results.csv", highlight=False)
    measured = frame[frame["status"] == "ok"]
    if "warnings" in measured and not measured.empty:
        noisy = measured["warnings"].fillna("").astype(str).str.contains("noisy:", regex=False).sum()
        if noisy:
            console.print(
                f"[yellow]{noisy} of {len(measured)} measured cases have a noisy latency[/] (IQR above "
                f"{NOISY_REL_IQR:.0%} of the median); see the warnings column, and rerun them on a quieter machine.",
                highlight=False,
            )


def _print_resume_plan(plan: ResumePlan, run_dir: RunDirectory) -> None:
    console.print(
        f"Resuming {run_dir.path}: {len(plan.finished)} cases finished, {len(plan.to_run)} to run.", highlight=False
    )
    if plan.superseded:
        reasons = ", ".join(f"{count} {reason}" for reason, count in plan.reasons.items())
        console.print(
            f"{len(plan.superseded)} earlier records moved to {run_dir.superseded_path.name} ({reasons}).",
            highlight=False,
        )


def _resume_command(
    scenario: Path, run_dir: RunDirectory, device: Optional[str], isolate: Optional[bool], time_limit: Optional[float]
) -> str:
    """Build the ``meobench run`` command line that continues this run with the same options."""
    parts = ["meobench", "run", str(scenario), "--resume", str(run_dir.path)]
    if device:
        parts += ["--device", device]
    if isolate is not None:
        parts.append("--isolate" if isolate else "--no-isolate")
    if time_limit is not None:
        parts += ["--time-limit", f"{time_limit:g}"]
    return shlex.join(parts)


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
