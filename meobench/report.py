"""Views of results: a DataFrame, and a rich table rendered from it.

Every view of the results is built from ``results_frame``, so the terminal table
and the CSV cannot disagree; the phase table reads the same row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import pandas as pd
from rich.table import Table

from meobench.profiling import PHASES
from meobench.results import COLUMNS, CaseResult

# (column, header with unit, format) of the terminal tables: the case, then what ``run`` measured.
CASE_COLUMNS = (
    ("model", "model", "{}"),
    ("variant", "variant", "{}"),
    ("strategy", "strategy", "{}"),
    ("expert_kind", "expert kind", "{}"),
    ("num_experts", "n", "{}"),
    ("top_k", "k", "{}"),
    ("batch_size", "batch", "{}"),
    ("seq_len", "seq", "{}"),
    ("dtype", "dtype", "{}"),
)
TABLE_COLUMNS = CASE_COLUMNS + (
    ("gflops", "GFLOP", "{:.3g}"),
    ("latency_ms_median", "median (ms)", "{:.3f}"),
    ("latency_ms_iqr", "IQR (ms)", "{:.3f}"),
    ("tokens_per_s", "tokens/s", "{:,.0f}"),
    ("peak_mem_mib", "peak (MiB)", "{:.3g}"),
    ("fidelity_rel_err", "rel err", "{:.1e}"),
    ("speedup_vs_moe", "vs MoE (x)", "{:.2f}"),
    ("status", "status", "{}"),
)
# (column, header with unit, format) of the ``meobench flops`` table.
FLOPS_TABLE_COLUMNS = CASE_COLUMNS + (
    ("gmacs", "GMAC", "{:.4g}"),
    ("gflops", "GFLOP counter", "{:.4g}"),
    ("gflops_analytic", "GFLOP analytic", "{:.4g}"),
    ("gflops_fvcore", "GFLOP fvcore", "{:.4g}"),
    ("gflops_profiler", "GFLOP profiler", "{:.4g}"),
    ("bytes_min", "min bytes", "{:.3g}"),
    ("arithmetic_intensity", "FLOP/byte", "{:.3g}"),
    ("flops_check", "check", "{}"),
    ("status", "status", "{}"),
)
# Row colour by status; any other status (failed, nan) is red.
STATUS_STYLES = {"ok": None, "skipped": "yellow"}
# Case parameters that may move from the columns to the caption when they do not vary.
PARAMETER_COLUMNS = ("model", "strategy", "expert_kind", "num_experts", "top_k", "batch_size", "seq_len", "dtype")


def results_frame(results: Iterable[CaseResult]) -> pd.DataFrame:
    """Build a DataFrame with one row per case and exactly the columns of results.csv."""
    return pd.DataFrame([result.to_row() for result in results], columns=list(COLUMNS))


@dataclass
class TableView:
    """The results table as formatted text cells, shared by the terminal, HTML and Markdown renderings."""

    columns: list[str]
    """Result columns shown, in order."""
    headers: list[str]
    """Header of each shown column, with its unit."""
    numeric: list[bool]
    """Whether each shown column contains numbers (right-aligned)."""
    rows: list[list[str]]
    """Formatted cells, one list per case; ``-`` for a missing value."""
    statuses: list[str]
    """Status of each row, for its colour."""
    caption: str | None
    """Parameters that are the same in every row, as ``name=value`` pairs; None when none is."""


def table_view(frame: pd.DataFrame, columns: tuple[tuple[str, str, str], ...] = TABLE_COLUMNS) -> TableView:
    """Format ``columns`` (column, header, format) of ``frame``.

    Parameters that are the same in every row move to the caption.
    """
    constant = [
        column
        for column in PARAMETER_COLUMNS
        if column in frame and len(frame) > 1 and frame[column].nunique(dropna=False) == 1
    ]
    shown = [spec for spec in columns if spec[0] not in constant and spec[0] in frame]
    return TableView(
        columns=[column for column, _, _ in shown],
        headers=[header for _, header, _ in shown],
        numeric=[pd.api.types.is_numeric_dtype(frame[column]) for column, _, _ in shown],
        rows=[[_format(row[column], fmt) for column, _, fmt in shown] for _, row in frame.iterrows()],
        statuses=[str(status) for status in frame["status"]],
        caption=_caption(frame, constant),
    )


def _caption(frame: pd.DataFrame, constant: list[str]) -> str | None:
    # A parameter empty in every row (model in a layer-only run) is left out of the caption too.
    pairs = [f"{column}={frame[column].iloc[0]}" for column in constant if frame[column].notna().any()]
    return ", ".join(pairs) or None


def results_table(
    frame: pd.DataFrame, title: str | None = None, columns: tuple[tuple[str, str, str], ...] = TABLE_COLUMNS
) -> Table:
    """Build a rich table of ``columns`` (column, header, format), units in the headers.

    Case parameters that are the same in every row move to the caption, so the
    table stays narrow enough for a terminal.
    """
    view = table_view(frame, columns)
    table = Table(title=title, caption=view.caption, header_style="bold")
    for header, numeric in zip(view.headers, view.numeric):
        # "fold" wraps a value that does not fit rather than cutting it to "…".
        table.add_column(header, justify="right" if numeric else "left", overflow="fold")
    for cells, status in zip(view.rows, view.statuses):
        table.add_row(*cells, style=STATUS_STYLES.get(status, "red"))
    return table


def _format(value: object, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


def markdown_table(headers: list[str], rows: Iterable[Iterable[object]]) -> str:
    """Render a GitHub-flavoured Markdown table, escaping ``|`` inside cells."""

    def cell(value: object) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(header) for header in headers) + " |"]
    lines.append("| " + " | ".join("---" for _ in headers) + " |")
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def status_counts(frame: pd.DataFrame) -> dict[str, int]:
    """Cases per status, for the closing summary line."""
    return {str(status): int(count) for status, count in frame["status"].value_counts().items()}


def phase_table(result: CaseResult) -> Table:
    """Per-phase times of one case, with the phase sum set against the measured forward time."""
    row = result.to_row()
    forward_ms = None if result.forward_s is None else result.forward_s * 1e3
    measured = "forward part of the training step" if result.part_medians_s else "latency median"
    table = Table(title=f"Phases of {result.case.case_id} ({row['phase_clock']} clock)", header_style="bold")
    table.add_column("phase")
    table.add_column("ms per forward", justify="right")
    table.add_column("% of measured", justify="right")

    def add(label: str, value_ms: float | None) -> None:
        share = 100 * value_ms / forward_ms if forward_ms and value_ms is not None else None
        table.add_row(label, _format(value_ms, "{:.3f}"), _format(share, "{:.1f}"))

    for phase in PHASES:
        if row[f"phase_{phase}_ms"] is not None:
            add(phase, row[f"phase_{phase}_ms"])
    table.add_section()
    add("sum of phases", row["phase_sum_ms"])
    add(f"measured ({measured})", forward_ms)
    add("gap (measured - sum)", row["phase_gap_ms"])
    add("profiled calls (median wall time)", row["profiled_call_ms"])
    return table


def operators_table(frame: pd.DataFrame, title: str) -> Table:
    """Build a rich table of the top operators from a ``profiling.operators_frame`` frame."""
    table = Table(title=title, header_style="bold")
    columns = [
        ("rank", "#", "{}"),
        ("operator", "operator", "{}"),
        ("calls_per_step", "calls/step", "{:.3g}"),
        ("self_cpu_ms", "self CPU (ms)", "{:.3f}"),
        ("cpu_total_ms", "CPU total (ms)", "{:.3f}"),
    ]
    # A CPU-only profile records no device time, so its column would read 0.000 throughout.
    if frame["self_device_ms"].fillna(0).any():
        columns.append(("self_device_ms", "self device (ms)", "{:.3f}"))
    for column, header, _ in columns:
        table.add_column(header, justify="left" if column == "operator" else "right", overflow="fold")
    for _, row in frame.iterrows():
        table.add_row(*(_format(row[column], fmt) for column, _, fmt in columns))
    return table
