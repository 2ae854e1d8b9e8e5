"""The report pages of a run: report.html, one file that opens offline, and report.md.

Both pages are rendered from the SavedRun frame (results.csv read back) and the
figures ``meobench.plots`` draws from that same frame, so the pages, the plots
and the CSV cannot disagree.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from meobench.plots import (
    Plot,
    build_plots,
    measured_rows,
    save_plots,
    variant_family,
    variant_rank,
    varying_parameters,
)
from meobench.report import status_counts, table_view
from meobench.saved_run import SavedRun, load_run

# The page loads nothing: images are inline data URIs and styles are inline.
CONTENT_SECURITY_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1400px; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; }
.caption { color: #555; margin-top: 0; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.5em; }
th { background: #f0f0f0; position: sticky; top: 0; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
tr.skipped td { background: #fff8e0; }
tr.failed td, tr.nan td, tr.oom td, tr.timeout td { background: #fde8e8; }
figure { margin: 1em 0 2em; }
figure img { max-width: 100%; height: auto; border: 1px solid #ddd; }
figcaption { color: #555; font-size: 0.9em; }
dl.environment { display: grid; grid-template-columns: max-content auto; gap: 0.1em 1em; font-size: 0.9em; }
dl.environment dt { font-weight: bold; }
dl.environment dd { margin: 0; font-family: monospace; }
"""


@dataclass
class ReportFiles:
    """Paths one ``write_reports`` call wrote."""

    html: Path | None = None
    markdown: Path | None = None
    plots: list[Path] = field(default_factory=list)
    left_out: dict[str, str] = field(default_factory=dict)
    """Title of each figure that was left out, with the reason."""


def not_measured(frame: pd.DataFrame) -> pd.DataFrame:
    """Cases that were skipped, failed or produced NaN, with the error each recorded."""
    return frame.loc[frame["status"] != "ok", ["case_id", "status", "error"]]


def speedup_summary(frame: pd.DataFrame) -> tuple[pd.DataFrame, str] | None:
    """Tabulate the median speedup over MoE per variant, by top-k when the run swept it.

    Returns the table, one row per variant and strategy, and a sentence naming what
    each median is taken over; None when no measured case has a speedup.
    """
    measured = measured_rows(frame)
    measured = measured[measured["speedup_vs_moe"].notna()]
    # An MoE variant run with one strategy is its own reference, so its row would read 1.00 throughout.
    strategies = measured.groupby("variant")["strategy"].transform("nunique")
    measured = measured[(measured["variant"].map(variant_family) != "moe") | (strategies > 1)]
    if measured.empty:
        return None
    others = [name for name in varying_parameters(measured) if name != "top_k"]
    over = f", taken across {' and '.join(others)}" if others else ""
    if "top_k" in varying_parameters(measured):
        table = measured.pivot_table(index=["variant", "strategy"], columns="top_k", values="speedup_vs_moe",
                                     aggfunc="median")  # fmt: skip
        table.columns = [f"k={k}" for k in table.columns]
    else:
        table = measured.groupby(["variant", "strategy"])[["speedup_vs_moe"]].median()
        table.columns = ["speedup (x)"]
    table = table.loc[sorted(table.index, key=lambda key: (variant_rank(key[0]), key[1]))]
    return table, f"Median speedup over the MoE reference (x){over}; above 1 is faster than MoE."


def status_line(frame: pd.DataFrame) -> str:
    return ", ".join(f"{count} {status}" for status, count in status_counts(frame).items())


def render_html(run: SavedRun, plots: list[Plot]) -> str:
    """Render the whole report as one HTML document with every figure inline."""
    escape = html.escape
    title = f"meobench report: {run.scenario_name}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CONTENT_SECURITY_POLICY}">',
        f"<title>{escape(title)}</title>",
        f"<style>{STYLE}</style>",
        "</head>",
        "<body>",
        f"<h1>{escape(title)}</h1>",
        f'<p class="caption">{escape(run.caption)}</p>',
    ]
    if run.scenario.get("description"):
        parts.append(f"<p>{escape(str(run.scenario['description']))}</p>")
    parts.append(f"<p><strong>{escape(status_line(run.frame))}</strong> of {len(run.frame)} cases.")
    if run.complete is False:
        parts.append(" The sweep was interrupted, so some cases are missing.")
    parts.append("</p>")

    summary = speedup_summary(run.frame)
    if summary is not None:
        table, sentence = summary
        parts.append("<h2>Summary</h2>")
        parts.append(f"<p>{escape(sentence)}</p>")
        cells = [[variant, strategy, *(_format_ratio(v) for v in row)] for (variant, strategy), row in table.iterrows()]
        parts.append(_html_table(["variant", "strategy", *table.columns], cells))

    parts.append("<h2>Plots</h2>")
    parts.append("<ul>")
    parts.extend(f'<li><a href="#{plot.name}">{escape(plot.title)}</a></li>' for plot in plots if plot.figure)
    parts.append('<li><a href="#results">Results table</a></li>')
    parts.append('<li><a href="#not-measured">Cases not measured</a></li>')
    parts.append("</ul>")
    for plot in plots:
        if plot.figure is None:
            continue
        encoded = base64.b64encode(plot.image("png")).decode("ascii")
        parts.append(f'<figure id="{plot.name}">')
        parts.append(f'<img src="data:image/png;base64,{encoded}" alt="{escape(plot.title)}">')
        caption = " ".join([plot.description, *plot.notes])
        parts.append(f"<figcaption>{escape(caption)}</figcaption>")
        parts.append("</figure>")
    left_out = [plot for plot in plots if plot.figure is None]
    if left_out:
        parts.append("<p>Plots left out:</p>\n<ul>")
        parts.extend(f"<li>{escape(plot.title)}: {escape(plot.reason or '')}.</li>" for plot in left_out)
        parts.append("</ul>")

    parts.append('<h2 id="results">Results</h2>')
    parts.append(_html_results_table(run.frame))
    parts.append('<h2 id="not-measured">Cases not measured</h2>')
    missing = not_measured(run.frame)
    if missing.empty:
        parts.append("<p>None: every case was measured.</p>")
    else:
        parts.append(_html_table(["case id", "status", "error"], missing.astype(str).values.tolist()))
    parts.append("<h2>Environment</h2>")
    parts.append(_html_definitions({**run.environment, "run directory": str(run.path)}))
    if run.scenario:
        parts.append("<h2>Scenario</h2>")
        parts.append(_html_definitions(_flatten(run.scenario)))
    parts.extend(["</body>", "</html>", ""])
    return "\n".join(parts)


def _format_ratio(value: float) -> str:
    return "-" if pd.isna(value) else f"{value:.2f}"


def _html_results_table(frame: pd.DataFrame) -> str:
    view = table_view(frame)
    lines = ["<table>"]
    if view.caption:
        lines.append(f"<caption>{html.escape(view.caption)}</caption>")
    lines.append("<thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in view.headers) + "</tr></thead>")
    lines.append("<tbody>")
    for cells, status in zip(view.rows, view.statuses):
        row = "".join(
            f'<td class="number">{html.escape(cell)}</td>' if numeric else f"<td>{html.escape(cell)}</td>"
            for cell, numeric in zip(cells, view.numeric)
        )
        lines.append(f'<tr class="{html.escape(status)}">{row}</tr>')
    lines.append("</tbody>\n</table>")
    return "\n".join(lines)


def _html_table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(header)}</th>" for header in headers)
    body = "\n".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"


def _html_definitions(values: dict[str, object]) -> str:
    items = "".join(f"<dt>{html.escape(str(k))}</dt><dd>{html.escape(str(v))}</dd>" for k, v in values.items())
    return f'<dl class="environment">{items}</dl>'


def _flatten(values: dict[str, object], prefix: str = "") -> dict[str, object]:
    """Nested scenario sections as dotted keys, for example ``sweep.top_k``."""
    flat: dict[str, object] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def render_markdown(run: SavedRun, plots: list[Plot], plot_folder: str = "plots") -> str:
    """Render the report as Markdown: tables, and links to the PNGs in ``plot_folder`` beside report.md."""
    lines = [f"# meobench report: {run.scenario_name}", "", run.caption, "", f"**{status_line(run.frame)}**", ""]
    summary = speedup_summary(run.frame)
    if summary is not None:
        table, sentence = summary
        lines += ["## Summary", "", sentence, "", _markdown_row(["variant", "strategy", *table.columns])]
        lines.append("|---|---|" + "---:|" * len(table.columns))
        for (variant, strategy), row in table.iterrows():
            lines.append(_markdown_row([variant, strategy, *(_format_ratio(value) for value in row)]))
        lines.append("")
    lines += ["## Plots", ""]
    for plot in plots:
        if plot.figure is None:
            lines.append(f"- {plot.title}: left out, {plot.reason}.")
        else:
            notes = f" {' '.join(plot.notes)}" if plot.notes else ""
            lines.append(f"- [{plot.title}]({plot_folder}/{plot.name}.png){notes}")
    lines += ["", "## Results", ""]
    view = table_view(run.frame)
    if view.caption:
        lines += [f"Same in every row: {view.caption}", ""]
    lines.append(_markdown_row(view.headers))
    lines.append("|" + "|".join("---:" if numeric else "---" for numeric in view.numeric) + "|")
    lines.extend(_markdown_row(cells) for cells in view.rows)
    missing = not_measured(run.frame)
    if not missing.empty:
        lines += ["", "## Cases not measured", "", _markdown_row(["case id", "status", "error"]), "|---|---|---|"]
        lines.extend(_markdown_row(row) for row in missing.astype(str).values.tolist())
    return "\n".join(lines) + "\n"


def _markdown_row(cells: list[str]) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|").replace("\n", " ") for cell in cells) + " |"


def write_reports(
    path: Path, *, html_page: bool = True, plots: bool = True, markdown: bool = True, svg: bool = False
) -> ReportFiles:
    """Read the run directory at ``path`` and write the requested report files into it.

    report.md links to the PNGs in plots/, so ``markdown`` saves them too.
    """
    run = load_run(path)
    drawn = build_plots(run)
    files = ReportFiles(left_out={plot.title: plot.reason or "" for plot in drawn if plot.figure is None})
    if plots or markdown:
        formats = ("png", "svg") if svg else ("png",)
        files.plots = save_plots(drawn, run.path / "plots", formats)
    if html_page:
        files.html = run.path / "report.html"
        files.html.write_text(render_html(run, drawn), encoding="utf-8")
    if markdown:
        files.markdown = run.path / "report.md"
        files.markdown.write_text(render_markdown(run, drawn), encoding="utf-8")
    return files
