"""Commands that read finished runs: ``compare``, ``gate`` and ``baseline update``."""

from __future__ import annotations

import math
import shutil
import tempfile
from pathlib import Path
from typing import Optional

import pandas as pd
import typer
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from meobench.cases import expand
from meobench.cli.common import EXIT_FAILED_CASES, EXIT_INTERRUPTED, app, console, error_console, reports_errors
from meobench.cli.run import run_and_report
from meobench.compare import METRICS, check_comparable, comparison_frame, join_keys
from meobench.errors import MeobenchError
from meobench.failures import FAILURE_STATUSES
from meobench.gate import GateReport, GateSettings, NotComparableError, gate_runs
from meobench.report import markdown_table
from meobench.rundir import RunDirectory
from meobench.runs import Run, load_run
from meobench.scenario import GATED_METRICS, load_scenario, parse_fraction

DEFAULT_BASELINE_SCENARIO = Path("scenarios/ci.yaml")
DEFAULT_BASELINE_DIR = Path("reports/baselines")


@app.command()
@reports_errors
def compare(
    runs: list[Path] = typer.Argument(..., help="Run directories or results.json files; ratios are against the first."),
    metric: Optional[list[str]] = typer.Option(
        None,
        "--metric",
        "-m",
        help=f"Metric to show (repeatable): {', '.join(METRICS)}. "
        "Default: gflops, latency_ms_median, peak_mem_mib, plus pct_of_peak when the devices differ.",
    ),
    markdown: bool = typer.Option(False, "--markdown", help="Print a Markdown table instead of a terminal table."),
    csv: bool = typer.Option(False, "--csv", help="Print CSV instead of a terminal table."),
) -> None:
    """Show runs side by side, joined on case parameters, with ratios against the first run."""
    if markdown and csv:
        raise MeobenchError("--markdown and --csv are exclusive; choose one output format.")
    loaded = [load_run(path) for path in runs]
    metrics = tuple(metric or _default_metrics(loaded))
    for name in metrics:
        if name not in METRICS:
            raise MeobenchError(f"--metric {name!r} is not a metric; choose from {', '.join(METRICS)}.")

    problems = []
    for other in loaded[1:]:
        comparability = check_comparable(loaded[0], other)
        problems += [f"{other.path}: scenario differs: {item}" for item in comparability.scenario]
        problems += [f"{other.path}: software stack differs: {item}" for item in comparability.stack]
        for note in comparability.notes:
            error_console.print(f"[yellow]note:[/] {escape(f'{other.path}: {note}')}", highlight=False)
    problems += [f"{run.path} is incomplete (interrupted)" for run in loaded if not run.complete]
    if problems:
        error_console.print(
            Panel(escape("\n".join(problems)), title="[bold]NOT COMPARABLE[/]", border_style="bold red"),
            highlight=False,
        )

    frame = comparison_frame(loaded, metrics)
    if csv:
        console.print(frame.to_csv(index=False), end="", markup=False, highlight=False, soft_wrap=True)
        return
    constant = [key for key in join_keys(loaded) if frame[key].nunique(dropna=False) <= 1 and len(frame) > 1]
    shown = [column for column in frame.columns if column not in constant]
    caption = ", ".join(f"{key}={frame[key].iloc[0]}" for key in constant)
    headers = [_header(column) for column in shown]
    if markdown:
        rows = [[_format(row[column]) for column in shown] for _, row in frame.iterrows()]
        text = markdown_table(headers, rows) + (f"\n{caption}\n" if caption else "")
        console.print(text, end="", markup=False, highlight=False, soft_wrap=True)
        return
    title = "Comparison" + (" (NOT COMPARABLE, see above)" if problems else "")
    table = Table(title=title, caption=caption or None, header_style="bold")
    for column, header in zip(shown, headers):
        table.add_column(
            escape(header), justify="right" if pd.api.types.is_numeric_dtype(frame[column]) else "left", overflow="fold"
        )
    for _, row in frame.iterrows():
        table.add_row(*[escape(_format(row[column])) for column in shown])
    console.print(table)


def _header(column: str) -> str:
    """Display header of a comparison column: ``median (ms) [label]``, or ``median ratio [label]``."""
    for metric, header in METRICS.items():
        if column.startswith(f"{metric} ratio ["):
            return f"{header.split(' (')[0]} ratio {column.removeprefix(f'{metric} ratio ')}"
        if column.startswith(f"{metric} ["):
            return f"{header} {column.removeprefix(f'{metric} ')}"
    return column


def _default_metrics(runs: list[Run]) -> list[str]:
    names = {next(iter(run.devices.values()), {}).get("name") for run in runs}
    return ["gflops", "latency_ms_median", "peak_mem_mib"] + (["pct_of_peak"] if len(names) > 1 else [])


def _format(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


@app.command()
@reports_errors
def gate(
    baseline: Path = typer.Argument(..., help="Baseline run directory or results.json."),
    current: Path = typer.Argument(..., help="Current run directory or results.json, of the same scenario."),
    max_regression: Optional[list[str]] = typer.Option(
        None,
        "--max-regression",
        help="METRIC=LIMIT, for example latency=10% (repeatable). "
        "Default: the current run's scenario gates.max_regression, else 10% for latency.",
    ),
    latency_floor_ms: Optional[float] = typer.Option(
        None,
        "--latency-floor-ms",
        min=0,
        help="Median latency changes below this, in ms, never fail. "
        "Default: the scenario's gates.latency_floor_ms, else 0.05.",
    ),
    alpha: Optional[float] = typer.Option(
        None,
        "--alpha",
        min=0,
        max=1,
        help="Significance level of the Mann-Whitney U test. Default: the scenario's gates.alpha, else 0.05.",
    ),
    only: str = typer.Option(
        "all",
        "--only",
        help="all: FLOPs, parameters and latency; deterministic: FLOPs and parameters only, "
        "which allows a baseline from other hardware.",
    ),
    summary: Optional[Path] = typer.Option(
        None, "--summary", help="Also write a Markdown summary here (for example $GITHUB_STEP_SUMMARY)."
    ),
) -> None:
    """Fail when CURRENT regresses against BASELINE: exit 0 pass, 1 regression, 2 not comparable or usage error."""
    if only not in ("all", "deterministic"):
        raise MeobenchError(f"--only {only!r} is not valid; use all or deterministic.")
    base_run, current_run = load_run(baseline), load_run(current)
    settings = _gate_settings(current_run.scenario, max_regression, latency_floor_ms, alpha)
    try:
        report = gate_runs(base_run, current_run, settings, latency=only == "all")
    except NotComparableError as error:
        if summary is not None:
            _append(summary, f"## meobench gate: not comparable\n\n```\n{error}\n```\n\n")
        raise

    _print_gate(report, settings)
    if summary is not None:
        _append(summary, gate_markdown(report, settings, base_run.path, current_run.path))
    raise typer.Exit(report.exit_status)


def _append(path: Path, text: str) -> None:
    """Append to a summary file, as CI job summaries collect several steps' output."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(text)


def _gate_settings(
    scenario: dict, limits: Optional[list[str]], floor_ms: Optional[float], alpha: Optional[float]
) -> GateSettings:
    """Read the current run's scenario gates and apply the command-line overrides."""
    settings = GateSettings.from_scenario(scenario)
    latency_limit = settings.max_latency_regression
    for text in limits or []:
        metric, _, value = text.partition("=")
        if metric not in GATED_METRICS or not value:
            raise MeobenchError(
                f"--max-regression {text!r} is not valid; write METRIC=LIMIT with METRIC one of "
                f"{', '.join(GATED_METRICS)}, for example latency=10%."
            )
        try:
            latency_limit = parse_fraction(value)
        except ValueError as error:
            raise MeobenchError(f"--max-regression {text!r}: {error}.") from None
    return GateSettings(
        max_latency_regression=latency_limit,
        latency_floor_ms=settings.latency_floor_ms if floor_ms is None else floor_ms,
        alpha=settings.alpha if alpha is None else alpha,
    )


# Outcome colours in the terminal.
OUTCOME_STYLES = {
    "pass": "green",
    "improvement": "cyan",
    "ambiguous": "yellow",
    "regression": "bold red",
    "mismatch": "bold red",
}


def _print_gate(report: GateReport, settings: GateSettings) -> None:
    shown = [check for check in report.checks if check.outcome != "pass" or check.metric == "latency"]
    table = Table(title="Gate", header_style="bold")
    for header in ("case", "metric", "outcome", "baseline", "current", "ratio", "p", "reason"):
        table.add_column(header, overflow="fold")
    for check in shown:
        table.add_row(
            check.case_id, check.metric, check.outcome, _value(check.baseline, check.metric), _value(check.current, check.metric),
            _format(check.ratio), _format(check.p_value), check.reason, style=OUTCOME_STYLES.get(check.outcome),
        )  # fmt: skip
    if shown:
        console.print(table)
    for note in report.notes:
        error_console.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
    counts = ", ".join(f"{count} {outcome}" for outcome, count in report.counts().items())
    verdict = "[bold red]FAILED[/]" if report.failed else "[bold green]PASSED[/]"
    cases = len({check.case_id for check in report.checks})
    console.print(
        f"{verdict}: {counts} in {len(report.checks)} checks of {cases} cases (latency limit {settings.max_latency_regression:.0%}, "
        f"floor {settings.latency_floor_ms} ms, alpha {settings.alpha}).",
        highlight=False,
    )


def _value(value: object, metric: str) -> str:
    text = _format(value)
    return f"{text} ms" if metric == "latency" and text != "-" else text


def gate_markdown(report: GateReport, settings: GateSettings, baseline: Path, current: Path) -> str:
    """Render a Markdown section for a CI job summary: verdict, counts and every check that did not pass."""
    verdict = "failed" if report.failed else "passed"
    counts = ", ".join(f"{count} {outcome}" for outcome, count in report.counts().items())
    lines = [
        f"## meobench gate {verdict}\n",
        f"Baseline `{baseline}`, current `{current}`: {counts}. Latency limit "
        f"{settings.max_latency_regression:.0%}, floor {settings.latency_floor_ms} ms, alpha {settings.alpha}.\n",
    ]
    notable = [check for check in report.checks if check.outcome != "pass"]
    if notable:
        rows = [
            [check.case_id, check.metric, check.outcome, _value(check.baseline, check.metric),
             _value(check.current, check.metric), _format(check.ratio), _format(check.p_value), check.reason]
            for check in notable
        ]  # fmt: skip
        lines.append(markdown_table(["case", "metric", "outcome", "baseline", "current", "ratio", "p", "reason"], rows))
    lines += [f"- note: {note}\n" for note in report.notes]
    return "\n".join(lines) + "\n"


baseline_app = typer.Typer(help="Manage the committed baselines that CI gates against.", no_args_is_help=True)
app.add_typer(baseline_app, name="baseline")


@baseline_app.command("update")
@reports_errors
def baseline_update(
    scenario: Path = typer.Option(DEFAULT_BASELINE_SCENARIO, "--scenario", "-s", help="Scenario to run."),
    device: str = typer.Option("cpu", "--device", "-d", help="Device to run every case on."),
    out: Optional[Path] = typer.Option(
        None, "--out", "-o", help="Baseline folder. Default: reports/baselines/<scenario name>-<device>/."
    ),
) -> None:
    """Run a scenario and store its results.json and results.csv as the committed baseline."""
    spec = load_scenario(scenario)
    cases = expand(spec, device)
    target = out or DEFAULT_BASELINE_DIR / f"{spec.name}-{device.replace(':', '')}"
    with tempfile.TemporaryDirectory(prefix="meobench-baseline-") as scratch:
        run_dir = RunDirectory(Path(scratch))
        frame, interrupted = run_and_report(scenario, spec, cases, run_dir)
        if interrupted:
            error_console.print("The baseline was not updated because the run was interrupted.")
            raise typer.Exit(EXIT_INTERRUPTED)
        if frame["status"].isin(FAILURE_STATUSES).any():
            error_console.print("The baseline was not updated because a case failed; fix it and run this again.")
            raise typer.Exit(EXIT_FAILED_CASES)
        target.mkdir(parents=True, exist_ok=True)
        for source in (run_dir.json_path, run_dir.csv_path):
            shutil.copyfile(source, target / source.name)
    console.print(f"Baseline updated: {target / 'results.json'}", highlight=False)
