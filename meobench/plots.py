"""Figures of a run: latency, FLOPs, speedup and memory curves, a roofline and device bars.

Every figure is drawn from the frame that ``meobench.saved_run`` reads back from
results.csv, keeping only rows whose status is ``ok``. Which figures apply is
decided from the columns and the swept values: a figure whose x-axis parameter
has a single value, or whose metric column is missing, is left out with the
reason in ``Plot.reason``.

Figures are built on ``matplotlib.figure.Figure`` directly, without pyplot, so
no GUI backend or global figure state is involved; saving renders with Agg.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.axis import Axis
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from meobench.layers.variants import ALL_VARIANTS, reference_variant
from meobench.saved_run import SavedRun

# Case parameters that can split a figure into panels, in the order panels are arranged.
PANEL_PARAMETERS = (
    "num_experts", "top_k", "batch_size", "seq_len", "d_model", "d_ff", "expert_kind", "dtype", "device", "mode",
)  # fmt: skip
# Short names of case parameters in panel titles.
PARAMETER_LABELS = {"num_experts": "n", "top_k": "k", "batch_size": "batch", "seq_len": "seq"}
# Axis labels of the swept parameters, with units.
AXIS_LABELS = {
    "top_k": "top-k (experts per token)",
    "batch_size": "batch size (sequences)",
    "seq_len": "sequence length (tokens)",
}
# Figures larger than this are left out: their panels would be too small to read.
MAX_PANELS = 48
# Case groups above this are left out of the device bar chart for the same reason.
MAX_BAR_GROUPS = 60
# Resolution of saved and embedded PNGs, dots per inch.
PNG_DPI = 100
# Size of one panel, inches.
PANEL_WIDTH_IN = 3.4
PANEL_HEIGHT_IN = 2.6
# Marker per strategy, so strategies of one variant share its colour; dashed lines are cost-model curves.
STRATEGY_MARKERS = ("o", "s", "^", "D", "v", "P")
# Columns added by the cost model and by device calibration when a run has them.
ANALYTIC_GFLOPS = "gflops_analytic"
ARITHMETIC_INTENSITY = "arithmetic_intensity"
ACHIEVED_TFLOPS = "achieved_tflops"
PCT_OF_PEAK = "pct_of_peak"
# Calibrated copy bandwidth (meobench calibrate); the roofline draws the memory roof only when a run has it.
BANDWIDTH_GB_S = "peak_bandwidth_gb_s"


class PlotNotApplicable(Exception):
    """A figure that the run's columns or swept values cannot support; the message gives the reason."""


class PlotKind(NamedTuple):
    """Title of one figure and a sentence on how to read it."""

    title: str
    description: str


# Each figure by its file stem, in the order the report shows them.
PLOT_KINDS = {
    "latency_vs_top_k": PlotKind(
        "Latency against top-k",
        "Median latency of one call per case; MoE grows with the experts each token uses, MEO should stay flat.",
    ),
    "gflops_vs_top_k": PlotKind(
        "FLOPs against top-k, MoE and MEO",
        "FLOPs of one call counted by FlopCounterMode (a multiply-add counts 2), on a log axis.",
    ),
    "speedup_vs_seq_len": PlotKind(
        "Speedup of MEO over MoE against sequence length",
        "MoE reference latency over MEO latency; above the dotted 1x line MEO is faster.",
    ),
    "speedup_vs_batch_size": PlotKind(
        "Speedup of MEO over MoE against batch size",
        "MoE reference latency over MEO latency; above the dotted 1x line MEO is faster.",
    ),
    "peak_memory_vs_batch_size": PlotKind(
        "Peak memory against batch size",
        "Most memory held at once during one call, above the weights and inputs.",
    ),
    "roofline": PlotKind(
        "Roofline: achieved FLOP/s against arithmetic intensity",
        "Each case's achieved FLOP/s under its device's measured ceiling.",
    ),
    "latency_by_device": PlotKind(
        "Latency per device",
        "Median latency of each case group on each device, on a log axis.",
    ),
}


@dataclass
class Plot:
    """One figure of the report, or the reason it was left out."""

    name: str
    """File stem in RUN_DIR/plots/, for example ``latency_vs_top_k``; a key of PLOT_KINDS."""
    figure: Figure | None = None
    """None when the figure was left out."""
    reason: str | None = None
    """Reason the figure was left out; None when it was drawn."""
    notes: list[str] = field(default_factory=list)
    """Facts a reader needs next to the figure, such as a cost-model curve that could not be drawn."""
    _images: dict[str, bytes] = field(default_factory=dict, repr=False)

    @property
    def title(self) -> str:
        return PLOT_KINDS[self.name].title

    @property
    def description(self) -> str:
        return PLOT_KINDS[self.name].description

    def image(self, image_format: str = "png") -> bytes:
        """Render the figure as PNG or SVG bytes, once per format."""
        if self.figure is None:
            raise ValueError(f"plot {self.name!r} was left out ({self.reason}), so it has no image")
        if image_format not in self._images:
            buffer = io.BytesIO()
            self.figure.savefig(buffer, format=image_format, dpi=PNG_DPI)
            self._images[image_format] = buffer.getvalue()
        return self._images[image_format]


def measured_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Select the rows of cases that ran and produced a result."""
    return frame[frame["status"] == "ok"]


def varying_parameters(frame: pd.DataFrame, exclude: tuple[str, ...] = ()) -> list[str]:
    """List the case parameters with more than one value in ``frame``, in panel order."""
    return [
        column
        for column in PANEL_PARAMETERS
        if column not in exclude and column in frame and frame[column].nunique(dropna=True) > 1
    ]


def line_label(variant: str, strategy: str, frame: pd.DataFrame) -> str:
    """Label a line with its variant, and its strategy when the frame runs that variant with several."""
    strategies = frame.loc[frame["variant"] == variant, "strategy"].nunique()
    return f"{variant} ({strategy})" if strategies > 1 else variant


def variant_colour(variant: str) -> str:
    """Pick a fixed colour per variant, the same in every figure."""
    return f"C{variant_rank(variant) % 10}"


def variant_family(variant: str) -> str | None:
    """``dense``, ``moe``, ``meo`` or ``native``; None for a variant this meobench version does not know."""
    spec = ALL_VARIANTS.get(variant)
    return spec.family if spec else None


def variant_rank(variant: str) -> int:
    """Position of a variant in the registry, so tables and legends list variants in one order."""
    names = list(ALL_VARIANTS)
    return names.index(variant) if variant in names else len(names)


def _require_sweep(frame: pd.DataFrame, x: str) -> None:
    if x not in frame:
        raise PlotNotApplicable(f"the results have no {x} column")
    values = sorted(frame[x].dropna().unique())
    if len(values) < 2:
        shown = values[0] if values else "none"
        raise PlotNotApplicable(f"the run measured a single {x} ({shown}), so there is no curve against it")


def _require_values(frame: pd.DataFrame, column: str) -> None:
    if column not in frame:
        raise PlotNotApplicable(f"the results have no {column} column")
    if frame[column].notna().sum() == 0:
        raise PlotNotApplicable(f"no measured case has a {column} value")


def _swept_rows(run: SavedRun, x: str, y: str) -> pd.DataFrame:
    """Select the measured rows, after checking that ``x`` takes several values and ``y`` has some."""
    frame = measured_rows(run.frame)
    _require_sweep(frame, x)
    _require_values(frame, y)
    return frame


def _draw_cost_model(ax: Axes, panel: pd.DataFrame, x: str, column: str, label: str) -> None:
    """Draw a cost-model column as a dashed line per variant and strategy, in the variant's colour."""
    for (variant, _), line in panel.groupby(["variant", "strategy"], sort=False):
        line = line.sort_values(x)
        ax.plot(line[x], line[column], color=variant_colour(variant), linestyle="--", linewidth=1, label=label)


def _panel_title(keys: tuple, parameters: list[str]) -> str:
    return " · ".join(f"{PARAMETER_LABELS.get(name, name)}={value}" for name, value in zip(parameters, keys))


def _grid(frame: pd.DataFrame, parameters: list[str]) -> tuple[dict[tuple, tuple[int, int]], int, int]:
    """Place each panel key at a grid position (row, column) and return the positions and the grid's shape.

    With two or more parameters, rows follow the first parameter's values and
    columns the combinations of the others, so a combination the sweep skipped
    leaves its cell empty. A single parameter wraps its values into rows of four.
    """
    if not parameters:
        return {(): (0, 0)}, 1, 1
    keys = sorted(tuple(row) for row in frame[parameters].drop_duplicates().itertuples(index=False))
    if len(keys) > MAX_PANELS:
        raise PlotNotApplicable(
            f"it would need {len(keys)} panels (one per {', '.join(parameters)}), more than {MAX_PANELS} readable ones"
        )
    if len(parameters) == 1:
        columns = min(len(keys), 4)
        return {key: divmod(index, columns) for index, key in enumerate(keys)}, math.ceil(len(keys) / columns), columns
    row_values = sorted({key[0] for key in keys})
    column_values = sorted({key[1:] for key in keys})
    positions = {key: (row_values.index(key[0]), column_values.index(key[1:])) for key in keys}
    return positions, len(row_values), len(column_values)


def _set_x_axis(ax: Axes, values: list, x: str) -> str:
    """Tick every swept value and return the axis label.

    A geometric sweep (1, 8, 32) gets a base-2 log axis so its points spread evenly.
    """
    label = AXIS_LABELS.get(x, x)
    numeric = all(isinstance(value, (int, float)) and value > 0 for value in values)
    if numeric and len(values) > 2 and max(values) / min(values) >= 8:
        ax.set_xscale("log", base=2)
        label += ", log scale"
    ax.set_xticks(values, [str(value) for value in values])
    ax.minorticks_off()
    return label


def facet_figure(
    frame: pd.DataFrame,
    *,
    x: str,
    y: str,
    title: str,
    caption: str,
    ylabel: str,
    log_y: bool = False,
    draw_extra: Callable[[Axes, pd.DataFrame], None] | None = None,
) -> Figure:
    """Draw small multiples of ``y`` against ``x``: one line per variant and strategy, one panel per other parameter.

    ``draw_extra`` adds to each panel what is specific to one figure (a cost-model
    curve, a break-even line); it receives the panel's rows.
    """
    parameters = varying_parameters(frame, exclude=(x,))
    positions, rows, columns = _grid(frame, parameters)
    figure = Figure(figsize=(PANEL_WIDTH_IN * columns + 2.2, PANEL_HEIGHT_IN * rows + 1.0), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False)
    strategies = sorted(frame["strategy"].dropna().unique())
    x_values = [value.item() if hasattr(value, "item") else value for value in sorted(frame[x].unique())]
    for ax in axes.flat:
        ax.set_visible(False)

    for key, (row, column) in positions.items():
        ax = axes[row][column]
        ax.set_visible(True)
        panel = frame
        for name, value in zip(parameters, key):
            panel = panel[panel[name] == value]
        for (variant, strategy), line in panel.groupby(["variant", "strategy"], sort=False):
            line = line.sort_values(x)
            ax.plot(
                line[x],
                line[y],
                color=variant_colour(variant),
                marker=STRATEGY_MARKERS[strategies.index(strategy) % len(STRATEGY_MARKERS)],
                markersize=4,
                label=line_label(variant, strategy, frame),
            )
        if draw_extra is not None:
            draw_extra(ax, panel)
        if log_y:
            ax.set_yscale("log")
            _label_log_axis(ax.yaxis)
        ax.set_title(_panel_title(key, parameters), fontsize=9)
        xlabel = _set_x_axis(ax, x_values, x)
        ax.tick_params(labelsize=8)
        ax.grid(True, alpha=0.3)

    # Axis labels on the outer panels only: the lowest panel of each column and the first of each row.
    for row, column in positions.values():
        if row + 1 == rows or not axes[row + 1][column].get_visible():
            axes[row][column].set_xlabel(xlabel, fontsize=8)
        if column == 0 or not axes[row][column - 1].get_visible():
            axes[row][column].set_ylabel(ylabel, fontsize=8)

    _figure_legend(figure, [ax for ax in axes.flat if ax.get_visible()])
    figure.suptitle(f"{title}\n{caption}", fontsize=11)
    return figure


def _label_log_axis(axis: Axis) -> None:
    """Label a log axis with plain numbers at 1, 2 and 5 per decade.

    Matplotlib's default labels only powers of ten, so a range within one decade would show one label or none.
    """
    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(NullFormatter())


def _figure_legend(figure: Figure, axes) -> None:
    """Add one legend to the figure, with each label once, outside the panels."""
    handles: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    if handles:
        figure.legend(handles.values(), handles.keys(), loc="outside right upper", fontsize=8)


def plot_latency_vs_top_k(run: SavedRun) -> Plot:
    """Draw median latency against top-k, one line per variant, one panel per other swept parameter."""
    plot = Plot("latency_vs_top_k")
    frame = _swept_rows(run, "top_k", "latency_ms_median")
    plot.figure = facet_figure(
        frame, x="top_k", y="latency_ms_median", title=plot.title, caption=run.caption, ylabel="median latency (ms)"
    )
    return plot


def plot_gflops_vs_top_k(run: SavedRun) -> Plot:
    """Draw GFLOP per call against top-k on a log axis, with the cost model dashed when the run has it."""
    plot = Plot("gflops_vs_top_k")
    frame = _swept_rows(run, "top_k", "gflops")
    has_model = ANALYTIC_GFLOPS in frame and frame[ANALYTIC_GFLOPS].notna().any()

    def draw_model(ax: Axes, panel: pd.DataFrame) -> None:
        _draw_cost_model(ax, panel, "top_k", ANALYTIC_GFLOPS, "cost model (dashed)")

    plot.notes.append("Lines that coincide have equal counts, for example MoE at every routing level.")
    if not has_model:
        plot.notes.append(f"No cost-model curve: the run has no {ANALYTIC_GFLOPS} values.")
    plot.figure = facet_figure(
        frame,
        x="top_k",
        y="gflops",
        title=plot.title,
        caption=run.caption,
        ylabel="GFLOP per call (log scale)",
        log_y=True,
        draw_extra=draw_model if has_model else None,
    )
    return plot


def predicted_speedup(frame: pd.DataFrame) -> pd.Series:
    """Compute the cost model's speedup for each row: the reference MoE variant's analytic FLOPs over the row's.

    The reference is the MoE variant ``speedup_vs_moe`` measures against, at its
    strategy with the fewest analytic FLOPs in the same case group.
    """
    group_columns = [column for column in PANEL_PARAMETERS if column in frame]
    moe = frame[frame["variant"].map(variant_family) == "moe"]
    fewest = moe.groupby(group_columns + ["variant"], dropna=False)[ANALYTIC_GFLOPS].min()
    predicted = []
    for _, row in frame.iterrows():
        key = tuple(row[column] for column in group_columns) + (reference_variant(row["variant"]),)
        reference = fewest.get(key)
        valid = reference is not None and pd.notna(reference) and pd.notna(row[ANALYTIC_GFLOPS])
        predicted.append(reference / row[ANALYTIC_GFLOPS] if valid and row[ANALYTIC_GFLOPS] > 0 else math.nan)
    return pd.Series(predicted, index=frame.index, dtype=float)


def plot_speedup(run: SavedRun, x: str) -> Plot:
    """Draw the speedup of each MEO variant over its MoE reference against ``x`` (seq_len or batch_size)."""
    plot = Plot(f"speedup_vs_{x}")
    frame = measured_rows(run.frame)
    frame = frame[frame["variant"].map(variant_family) == "meo"]
    if frame.empty:
        raise PlotNotApplicable("the run measured no MEO variant")
    _require_sweep(frame, x)
    _require_values(frame, "speedup_vs_moe")
    has_model = ANALYTIC_GFLOPS in frame and frame[ANALYTIC_GFLOPS].notna().any()
    if has_model:
        frame = frame.assign(predicted_speedup=predicted_speedup(measured_rows(run.frame)))
    else:
        plot.notes.append(f"No predicted curve: the run has no {ANALYTIC_GFLOPS} values from the cost model.")

    def draw_extra(ax: Axes, panel: pd.DataFrame) -> None:
        ax.axhline(1.0, color="grey", linewidth=0.8, linestyle=":", label="break-even (1x)")
        if has_model:
            _draw_cost_model(ax, panel, x, "predicted_speedup", "cost model, FLOP ratio (dashed)")

    plot.figure = facet_figure(
        frame,
        x=x,
        y="speedup_vs_moe",
        title=plot.title,
        caption=run.caption,
        ylabel="speedup over MoE (x)",
        draw_extra=draw_extra,
    )
    return plot


def plot_memory_vs_batch(run: SavedRun) -> Plot:
    """Draw peak memory against batch size, one line per variant."""
    plot = Plot("peak_memory_vs_batch_size")
    frame = _swept_rows(run, "batch_size", "peak_mem_mib")
    plot.figure = facet_figure(
        frame,
        x="batch_size",
        y="peak_mem_mib",
        title=plot.title,
        caption=run.caption,
        ylabel="peak memory above inputs (MiB)",
    )
    return plot


def plot_roofline(run: SavedRun) -> Plot:
    """Draw achieved TFLOP/s against arithmetic intensity, one panel per device, under its measured ceiling.

    The compute ceiling is recovered from the calibration columns as
    achieved_tflops / (pct_of_peak / 100). The memory roof needs a bandwidth column.
    """
    plot = Plot("roofline")
    frame = measured_rows(run.frame)
    for column in (ACHIEVED_TFLOPS, ARITHMETIC_INTENSITY, PCT_OF_PEAK):
        if column not in frame or frame[column].notna().sum() == 0:
            raise PlotNotApplicable(f"the run has no {column} values (they come from device calibration)")
    frame = frame[frame[ACHIEVED_TFLOPS].notna() & frame[ARITHMETIC_INTENSITY].notna()]
    if BANDWIDTH_GB_S not in frame:
        plot.notes.append(f"No memory roof: the run has no {BANDWIDTH_GB_S} column.")

    devices = sorted(frame["device"].unique())
    figure = Figure(figsize=(6.5 * len(devices) + 2, 5), layout="constrained")
    axes = figure.subplots(1, len(devices), squeeze=False)[0]
    strategies = sorted(frame["strategy"].dropna().unique())
    # Intensities that the ceiling lines span: a decade around the measured points.
    intensity = np.geomspace(frame[ARITHMETIC_INTENSITY].min() / 3, frame[ARITHMETIC_INTENSITY].max() * 3, 200)
    for ax, device in zip(axes, devices):
        rows = frame[frame["device"] == device]
        for (variant, strategy), points in rows.groupby(["variant", "strategy"], sort=False):
            ax.scatter(points[ARITHMETIC_INTENSITY], points[ACHIEVED_TFLOPS], color=variant_colour(variant), s=18,
                       marker=STRATEGY_MARKERS[strategies.index(strategy) % len(STRATEGY_MARKERS)],
                       label=line_label(variant, strategy, frame))  # fmt: skip

        valid = rows[rows[PCT_OF_PEAK] > 0]
        peak_tflops = (valid[ACHIEVED_TFLOPS] / (valid[PCT_OF_PEAK] / 100)).median()
        ceiling = np.full_like(intensity, peak_tflops)
        if BANDWIDTH_GB_S in rows and rows[BANDWIDTH_GB_S].notna().any():
            # GB/s times FLOP/byte is GFLOP/s; divide by 1000 for TFLOP/s.
            ceiling = np.minimum(ceiling, rows[BANDWIDTH_GB_S].median() * intensity / 1000)
        ax.plot(intensity, ceiling, color="black", linewidth=1, label="measured ceiling")
        ax.set_title(f"{device} ({', '.join(map(str, rows['device_name'].dropna().unique()))}): "
                     f"peak {peak_tflops:.3g} TFLOP/s", fontsize=9)  # fmt: skip
        ax.set_xscale("log")
        ax.set_yscale("log")
        _label_log_axis(ax.xaxis)
        _label_log_axis(ax.yaxis)
        ax.set_xlabel("arithmetic intensity (FLOP/byte, log scale)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("achieved TFLOP/s (log scale)")

    _figure_legend(figure, axes)
    figure.suptitle(f"{plot.title}\n{run.caption}", fontsize=11)
    plot.figure = figure
    return plot


def plot_device_bars(run: SavedRun) -> Plot:
    """Draw horizontal bars of median latency, one bar per device, one row per case group.

    A sweep with more than MAX_BAR_GROUPS case groups gets one row per variant
    instead: the geometric mean latency over the case groups that every device
    measured, so each device's bar summarises the same cases.
    """
    plot = Plot("latency_by_device")
    frame = measured_rows(run.frame)
    names = frame["device_name"].nunique() if "device_name" in frame else 0
    device_column = "device_name" if names > 1 else "device"
    if frame[device_column].nunique() < 2:
        raise PlotNotApplicable("the run measured a single device")
    _require_values(frame, "latency_ms_median")
    parameters = varying_parameters(frame, exclude=("device",))
    group_columns = ["variant", "strategy", *parameters]
    table = frame.pivot_table(index=group_columns, columns=device_column, values="latency_ms_median", aggfunc="median")
    table = table.loc[sorted(table.index, key=lambda key: (variant_rank(key[0]), *key[1:]))]
    labels = [_bar_label(key, group_columns, parameters) for key in table.index]
    xlabel = "median latency (ms, log scale)"
    if len(table) > MAX_BAR_GROUPS:
        group_count = len(table)
        common = table.dropna()
        if common.empty:
            raise PlotNotApplicable("no case group was measured on every device")
        table = np.exp(np.log(common).groupby(level=["variant", "strategy"]).mean())
        table = table.loc[sorted(table.index, key=lambda key: (variant_rank(key[0]), key[1]))]
        labels = [line_label(variant, strategy, frame) for variant, strategy in table.index]
        xlabel = "geometric mean of median latency (ms, log scale)"
        plot.notes.append(
            f"The run has {group_count} case groups, more than {MAX_BAR_GROUPS} bars "
            f"can show, so each bar is the geometric mean over the {len(common)} groups every device measured."
        )

    devices = list(table.columns)
    height = 0.8 / len(devices)
    figure = Figure(figsize=(10, 1.4 + 0.22 * len(labels) * len(devices)), layout="constrained")
    ax = figure.subplots()
    for index, device in enumerate(devices):
        positions = [row + index * height for row in range(len(labels))]
        ax.barh(positions, table[device], height=height, label=str(device), color=f"C{index}")
    # Each row's tick sits at the middle of its group of bars.
    ax.set_yticks([row + 0.4 - height / 2 for row in range(len(labels))], labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    _label_log_axis(ax.xaxis)
    ax.set_xlabel(xlabel)
    ax.grid(True, axis="x", which="both", alpha=0.3)
    ax.legend(title="device", fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    figure.suptitle(f"{plot.title}\n{run.caption}", fontsize=11)
    plot.figure = figure
    return plot


def _bar_label(key: tuple, group_columns: list[str], parameters: list[str]) -> str:
    """Join a case group's variant, strategy and swept values into one tick label."""
    parts = []
    for column, value in zip(group_columns, key):
        parts.append(f"{PARAMETER_LABELS.get(column, column)}={value}" if column in parameters else str(value))
    return " · ".join(parts)


# Builder of each figure by its file stem; each raises PlotNotApplicable when the run cannot support it.
PLOT_BUILDERS: dict[str, Callable[[SavedRun], Plot]] = {
    "latency_vs_top_k": plot_latency_vs_top_k,
    "gflops_vs_top_k": plot_gflops_vs_top_k,
    "speedup_vs_seq_len": lambda run: plot_speedup(run, "seq_len"),
    "speedup_vs_batch_size": lambda run: plot_speedup(run, "batch_size"),
    "peak_memory_vs_batch_size": plot_memory_vs_batch,
    "roofline": plot_roofline,
    "latency_by_device": plot_device_bars,
}


def build_plots(run: SavedRun) -> list[Plot]:
    """Draw every figure that applies to the run; the others come back with the reason they were left out."""
    if measured_rows(run.frame).empty:
        return [Plot(name, reason="no case was measured: every case was skipped or failed") for name in PLOT_KINDS]
    plots = []
    for name in PLOT_KINDS:
        try:
            plots.append(PLOT_BUILDERS[name](run))
        except PlotNotApplicable as reason:
            plots.append(Plot(name, reason=str(reason)))
    return plots


def save_plots(plots: list[Plot], folder: Path, formats: tuple[str, ...] = ("png",)) -> list[Path]:
    """Write each drawn figure to ``folder/<name>.<format>``; return the paths written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for plot in plots:
        if plot.figure is None:
            continue
        for image_format in formats:
            path = folder / f"{plot.name}.{image_format}"
            path.write_bytes(plot.image(image_format))
            written.append(path)
    return written
