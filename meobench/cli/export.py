"""``meobench export``: write a run in another tool's format."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from meobench.cli.common import app, console, reports_errors
from meobench.errors import MeobenchError
from meobench.export import PYTEST_BENCHMARK_FORMAT, pytest_benchmark_document
from meobench.runs import load_run


@app.command()
@reports_errors
def export(
    run: Path = typer.Argument(..., help="Run directory or results.json."),
    format: str = typer.Option(..., "--format", "-f", help=f"Output format: {PYTEST_BENCHMARK_FORMAT}."),
    out: Optional[Path] = typer.Option(
        None, "--out", "-o", help="File to write. Default: <run directory>/pytest-benchmark.json."
    ),
) -> None:
    """Write a run's cases as pytest-benchmark JSON, so dashboards that read it ingest meobench results."""
    if format != PYTEST_BENCHMARK_FORMAT:
        raise MeobenchError(f"--format {format!r} is not supported; use {PYTEST_BENCHMARK_FORMAT}.")
    loaded = load_run(run)
    document = pytest_benchmark_document(loaded)
    target = out or loaded.path.parent / "pytest-benchmark.json"
    target.write_text(json.dumps(document, indent=2, default=str) + "\n", encoding="utf-8")
    console.print(f"Wrote {len(document['benchmarks'])} benchmarks to {target}", highlight=False)
