"""``meobench profile``: measure one case of a scenario and show where its time goes."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Optional

import typer

from meobench.calibrate import calibrations_for
from meobench.cases import Case, expand
from meobench.cli.common import (
    EXIT_FAILED_CASES,
    app,
    check_device,
    console,
    device_option,
    error_console,
    out_option,
    reports_errors,
    scenario_argument,
)
from meobench.cli.run import require_devices, run_environment
from meobench.errors import MeobenchError
from meobench.profiling import operators_frame
from meobench.report import operators_table, phase_table, results_frame, results_table
from meobench.roofline import fill_roofline
from meobench.rundir import RunDirectory, default_run_dir
from meobench.runner import Runner
from meobench.scenario import Scenario, dump_scenario, load_scenario


@app.command()
@reports_errors
def profile(
    scenario: Path = scenario_argument("scenarios/profile.yaml"),
    case: str = typer.Option(
        ...,
        "--case",
        "-c",
        help="Case id to profile, as `meobench run SCENARIO --dry-run` lists them; "
        "a prefix that names one case is enough.",
    ),
    out: Optional[Path] = out_option("the results files and the traces/, chrome/, operators/ and memory/ folders"),
    device: Optional[str] = device_option("the case"),
) -> None:
    """Measure one case under torch.profiler: phase times, top operators, trace files for TensorBoard and Perfetto."""
    check_device(device)
    spec = load_scenario(scenario)
    if spec.measure.profile_active < 1:
        raise MeobenchError(
            f"{scenario}: measure.profile_active is {spec.measure.profile_active}, so the profiler would record "
            "no step; set it to 1 or more."
        )
    chosen = find_case(expand(spec, device), case, scenario)
    if device is not None:
        require_devices([chosen.group.device], scenario, device)

    run_dir = RunDirectory.create(out or default_run_dir(spec.name))
    error_console.print(f"profiling {chosen.case_id}", highlight=False)
    result = next(Runner(spec, trace_dir=run_dir.path).iterate([chosen]))
    devices = [chosen.group.device]
    calibrations = calibrations_for(devices, spec.threads)
    fill_roofline([result], calibrations)
    environment = run_environment(scenario, spec, devices)
    environment["calibration"] = {device: calibration.to_json() for device, calibration in calibrations.items()}
    run_dir.append(result)
    run_dir.write_final([result], dump_scenario(spec), environment, complete=True)

    console.print(results_table(results_frame([result]), title=f"{spec.name}: {chosen.case_id}"))
    if result.status != "ok":
        error_console.print(f"[red]{result.status}:[/] {result.error}", highlight=False)
        raise typer.Exit(EXIT_FAILED_CASES)
    _print_profile(result, spec, run_dir)


def find_case(cases: list[Case], case_id: str, scenario: Path) -> Case:
    """Find the case whose id is ``case_id``, or the only one it is a prefix of."""
    ids = [case.case_id for case in cases]
    if case_id in ids:
        return cases[ids.index(case_id)]
    matching = [case for case in cases if case.case_id.startswith(case_id)]
    if len(matching) == 1:
        return matching[0]
    if matching:
        listed = ", ".join(case.case_id for case in matching[:5])
        raise MeobenchError(
            f"--case {case_id!r} matches {len(matching)} cases of {scenario} ({listed}); give a full id."
        )
    close = difflib.get_close_matches(case_id, ids, n=3, cutoff=0.5)
    hint = f" Closest: {', '.join(close)}." if close else ""
    raise MeobenchError(
        f"--case {case_id!r} is not a case of {scenario}.{hint} "
        f"List the case ids with `meobench run {scenario} --dry-run`."
    )


def _print_profile(result, spec: Scenario, run_dir: RunDirectory) -> None:
    summary = result.profile
    if summary is None:
        return
    if summary.phase_s:
        console.print(phase_table(result))
    for warning in result.warnings:
        error_console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    clock = "device" if summary.clock == "device" else "CPU"
    title = f"Top operators by self {clock} time (per step, {summary.steps} steps)"
    console.print(operators_table(operators_frame(summary.operators), title))
    console.print("Files:", highlight=False)
    for path in summary.files:
        console.print(f"  {path}", highlight=False)
    console.print(
        f"Open the trace with: tensorboard --logdir {run_dir.path / 'traces'}  (needs torch-tb-profiler)",
        highlight=False,
    )
