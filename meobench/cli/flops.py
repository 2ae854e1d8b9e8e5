"""``meobench flops``: every FLOP figure of every case, counted and checked, nothing timed."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from meobench.cases import expand
from meobench.cli.common import (
    EXIT_FAILED_CASES,
    EXIT_INTERRUPTED,
    app,
    check_device,
    console,
    device_option,
    out_option,
    reports_errors,
    scenario_argument,
)
from meobench.cli.run import run_and_report
from meobench.report import FLOPS_TABLE_COLUMNS
from meobench.rundir import RunDirectory, default_run_dir
from meobench.scenario import load_scenario


@app.command()
@reports_errors
def flops(
    scenario: Path = scenario_argument(),
    out: Optional[Path] = out_option(),
    device: Optional[str] = device_option(),
    allow_failures: bool = typer.Option(
        False, "--allow-failures", help="Exit with status 0 even when some cases failed."
    ),
) -> None:
    """Count FLOPs with FlopCounterMode, fvcore and the torch profiler, and check each against the analytic model.

    Writes the same files as ``run``, with the latency, memory and fidelity columns empty.
    Layers run for their shapes only (ShapeOnlyMode), so a case costs about the same
    at any batch size: scenarios/scaling.yaml took 12 s of CPU time on a shared 2-core x86-64 CPU.
    """
    check_device(device)
    spec = load_scenario(scenario)
    cases = expand(spec, device)
    run_dir = RunDirectory.create(out or default_run_dir(spec.name))
    started = time.perf_counter()
    frame, interrupted = run_and_report(scenario, spec, cases, run_dir, count_only=True, columns=FLOPS_TABLE_COLUMNS)
    console.print(f"Counted {len(frame)} cases in {time.perf_counter() - started:.1f} s.", highlight=False)
    if interrupted:
        raise typer.Exit(EXIT_INTERRUPTED)
    if not allow_failures and frame["status"].isin(["failed", "nan"]).any():
        raise typer.Exit(EXIT_FAILED_CASES)
