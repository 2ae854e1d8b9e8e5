"""Shared pieces of the command line: the typer app, consoles and error reporting."""

from __future__ import annotations

import functools
import logging
from typing import Callable, Optional

import typer
from rich.console import Console
from rich.logging import RichHandler

from meobench.errors import MeobenchError
from meobench.scenario import DEVICE_PATTERN

app = typer.Typer(
    help="Benchmark Mixture-of-Experts layers against MEO (Merging Experts into One): "
    "FLOPs, latency, memory and output fidelity from declarative YAML scenarios.",
    no_args_is_help=True,
    add_completion=False,
)

# Output sent to a file or pipe is not limited to 80 columns, so the results table keeps its shape.
WIDTH_WHEN_REDIRECTED = 200
console = Console()
if not console.is_terminal:
    console = Console(width=WIDTH_WHEN_REDIRECTED)
error_console = Console(stderr=True)

# Exit statuses.
EXIT_FAILED_CASES = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def reports_errors(command: Callable[..., None]) -> Callable[..., None]:
    """Turn a MeobenchError into one message on stderr and its exit status, without a traceback."""

    @functools.wraps(command)
    def wrapper(*args: object, **kwargs: object) -> None:
        try:
            command(*args, **kwargs)
        except MeobenchError as error:
            error_console.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
            raise typer.Exit(error.exit_code) from None

    return wrapper


@app.callback()
def configure(
    verbose: bool = typer.Option(
        False, "--verbose", "-v", help="Log progress details and full tracebacks of failed cases."
    ),
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=error_console, show_path=False, rich_tracebacks=verbose)],
    )
    if not verbose:
        # A failed case is reported in its row; its traceback only with --verbose.
        logging.getLogger("meobench.runner").setLevel(logging.CRITICAL)


def scenario_argument(example: str = "scenarios/scaling.yaml") -> typer.models.ArgumentInfo:
    """Build the SCENARIO argument shared by the commands that run a scenario."""
    return typer.Argument(..., help=f"Scenario YAML file, for example {example}.")


def out_option(
    contents: str = "results.csv, results.json and results.jsonl",
) -> typer.models.OptionInfo:
    """Build the --out option shared by the commands that write a run directory; ``contents`` lists what it gets."""
    return typer.Option(
        None,
        "--out",
        "-o",
        help=f"New run directory for {contents}; it must not exist or be empty. "
        "Default: reports/<scenario name>/<UTC timestamp>/.",
    )


def device_option(cases: str = "every case") -> typer.models.OptionInfo:
    """Build the --device option shared by the commands that run a scenario; ``cases`` names the cases it moves."""
    return typer.Option(
        None,
        "--device",
        "-d",
        help=f"Run {cases} on this device (auto, cpu, cuda, cuda:N or mps) instead of the scenario's device list.",
    )


def check_device(device: Optional[str]) -> None:
    """Reject a --device value that names no device, before any work starts."""
    if device is not None and not DEVICE_PATTERN.match(device):
        raise MeobenchError(f"--device {device!r} is not a device; use auto, cpu, cuda, cuda:N or mps.")
