"""``meobench report``: plots, report.html and report.md from a finished run directory."""

from __future__ import annotations

from pathlib import Path

import typer

from meobench.cli.common import app, console, reports_errors
from meobench.report_pages import ReportFiles, write_reports


@app.command()
@reports_errors
def report(
    run_dir: Path = typer.Argument(..., help="Run directory written by `meobench run` (contains results.csv)."),
    html: bool = typer.Option(False, "--html", help="Write RUN_DIR/report.html, one file with every plot inline."),
    plots: bool = typer.Option(False, "--plots", help="Save the plots as PNG in RUN_DIR/plots/."),
    markdown: bool = typer.Option(
        False, "--markdown", help="Write RUN_DIR/report.md with tables and links to the PNGs (saves them too)."
    ),
    svg: bool = typer.Option(False, "--svg", help="Save each plot as SVG beside its PNG."),
) -> None:
    """Draw the plots of a run and write its HTML and Markdown reports.

    With none of --html, --plots and --markdown, all three are written; --svg adds SVG copies of the plots.
    """
    if not (html or plots or markdown):
        html = plots = markdown = True
    files = write_reports(run_dir, html_page=html, plots=plots or svg, markdown=markdown, svg=svg)
    print_report_files(files)


def print_report_files(files: ReportFiles) -> None:
    """List what was written and which plots were left out, with the reason."""
    for title, reason in files.left_out.items():
        console.print(f"Left out {title!r}: {reason}.", highlight=False)
    written = [path for path in (files.html, files.markdown) if path] + files.plots
    console.print("Wrote " + ", ".join(str(path) for path in written), highlight=False)
