import pandas as pd
import pytest
from PIL import Image

from meobench.plots import (
    PlotNotApplicable,
    build_plots,
    plot_device_bars,
    plot_gflops_vs_top_k,
    plot_latency_vs_top_k,
    plot_memory_vs_batch,
    plot_roofline,
    plot_speedup,
    save_plots,
)
from tests.synthetic_runs import synthetic_frame, synthetic_run


def visible_axes(plot):
    return [ax for ax in plot.figure.axes if ax.get_visible()]


def panel(plot, title):
    return next(ax for ax in visible_axes(plot) if ax.get_title() == title)


def line(ax, label):
    return next(item for item in ax.get_lines() if item.get_label() == label)


def test_latency_plot_panels_and_lines():
    plot = plot_latency_vs_top_k(synthetic_run())
    axes = visible_axes(plot)
    # One panel per (num_experts, batch_size): 2 x 2.
    assert len(axes) == 4
    for ax in axes:
        # dense, moe-sequence, meo-sequence; the failed gather case draws nothing.
        assert len(ax.get_lines()) == 3
    # Labels on the outer panels: the bottom row (n=8) and the first column (batch=1).
    for title in ("n=8 · batch=1", "n=8 · batch=8"):
        assert panel(plot, title).get_xlabel() == "top-k (experts per token)"
    for title in ("n=4 · batch=1", "n=8 · batch=1"):
        assert panel(plot, title).get_ylabel() == "median latency (ms)"
    assert panel(plot, "n=4 · batch=8").get_xlabel() == ""
    assert panel(plot, "n=4 · batch=8").get_ylabel() == ""


def test_latency_plot_points():
    plot = plot_latency_vs_top_k(synthetic_run())
    ax = panel(plot, "n=4 · batch=8")
    moe = line(ax, "moe-sequence")
    # moe latency = 2 * k * b with b = 8: 16, 32, 64 ms at k = 1, 2, 4; the skipped k = 8 case is absent.
    assert list(moe.get_xdata()) == [1, 2, 4]
    assert list(moe.get_ydata()) == [16.0, 32.0, 64.0]


def test_figure_title_names_scenario_device_date():
    plot = plot_latency_vs_top_k(synthetic_run())
    title = plot.figure.get_suptitle()
    assert "Latency against top-k" in title
    assert "synthetic" in title
    assert "cpu (Test CPU)" in title
    assert "2026-01-02 03:04:05 UTC" in title


def test_gflops_plot_log_axis():
    plot = plot_gflops_vs_top_k(synthetic_run())
    for ax in visible_axes(plot):
        assert ax.get_yscale() == "log"
        assert len(ax.get_lines()) == 3
    assert panel(plot, "n=4 · batch=1").get_ylabel() == "GFLOP per call (log scale)"
    assert any("gflops_analytic" in note for note in plot.notes)


def test_gflops_plot_draws_cost_model():
    frame = synthetic_frame()
    frame["gflops_analytic"] = frame["gflops"]
    plot = plot_gflops_vs_top_k(synthetic_run(frame))
    for ax in visible_axes(plot):
        # 3 measured lines and 3 dashed cost-model lines.
        assert len(ax.get_lines()) == 6
        assert sum(item.get_linestyle() == "--" for item in ax.get_lines()) == 3
    assert not any("gflops_analytic" in note for note in plot.notes)


def test_speedup_plot_only_meo_lines():
    plot = plot_speedup(synthetic_run(), "batch_size")
    axes = visible_axes(plot)
    # One panel per (num_experts, top_k): 2 x 3.
    assert len(axes) == 6
    for ax in axes:
        # meo-sequence and the break-even line at 1x.
        assert [item.get_label() for item in ax.get_lines()] == ["meo-sequence", "break-even (1x)"]
    assert panel(plot, "n=8 · k=1").get_ylabel() == "speedup over MoE (x)"
    # Two batch sizes (1, 8) are too few for a log axis.
    assert panel(plot, "n=8 · k=4").get_xlabel() == "batch size (sequences)"
    # speedup = 2k/3; at k = 2: 4/3 for both batch sizes.
    assert list(line(panel(plot, "n=8 · k=2"), "meo-sequence").get_ydata()) == pytest.approx([4 / 3, 4 / 3])


def test_speedup_plot_predicted_curve():
    frame = synthetic_frame()
    frame["gflops_analytic"] = frame["gflops"]
    plot = plot_speedup(synthetic_run(frame), "batch_size")
    ax = panel(plot, "n=4 · k=4")
    predicted = [item for item in ax.get_lines() if item.get_linestyle() == "--"]
    assert len(predicted) == 1
    # MoE 0.1*k*b GFLOP over MEO 0.2*b GFLOP = k/2 = 2 at k = 4.
    assert list(predicted[0].get_ydata()) == pytest.approx([2.0, 2.0])


def test_speedup_single_seq_len_left_out():
    with pytest.raises(PlotNotApplicable, match=r"single seq_len \(16\)"):
        plot_speedup(synthetic_run(), "seq_len")


def test_top_k_plot_left_out_for_batch_sweep():
    frame = synthetic_frame()
    run = synthetic_run(frame[frame["top_k"] == 1])
    with pytest.raises(PlotNotApplicable, match=r"single top_k \(1\)"):
        plot_latency_vs_top_k(run)


def test_memory_plot_lines():
    plot = plot_memory_vs_batch(synthetic_run())
    ax = panel(plot, "n=8 · k=1")
    assert len(ax.get_lines()) == 3
    assert ax.get_ylabel() == "peak memory above inputs (MiB)"
    # meo memory = 3 * b MiB at b = 1 and 8.
    assert list(line(ax, "meo-sequence").get_ydata()) == [3.0, 24.0]


def test_skipped_combination_leaves_empty_panel():
    frame = synthetic_frame()
    frame = frame[~((frame["num_experts"] == 4) & (frame["top_k"] == 4))]
    plot = plot_speedup(synthetic_run(frame), "batch_size")
    # 2 x 3 grid with the n=4, k=4 cell empty.
    assert len(plot.figure.axes) == 6
    assert len(visible_axes(plot)) == 5
    assert panel(plot, "n=8 · k=4") is plot.figure.axes[5]
    assert panel(plot, "n=4 · k=2").get_xlabel() == ""
    assert panel(plot, "n=8 · k=4").get_xlabel() == "batch size (sequences)"


def test_panel_above_empty_cell_gets_x_label():
    frame = synthetic_frame()
    frame = frame[~((frame["num_experts"] == 8) & (frame["top_k"] == 4))]
    plot = plot_speedup(synthetic_run(frame), "batch_size")
    assert panel(plot, "n=4 · k=4").get_xlabel() == "batch size (sequences)"
    assert panel(plot, "n=4 · k=2").get_xlabel() == ""


def test_roofline_ceiling_from_pct_of_peak():
    frame = synthetic_frame()
    frame["achieved_tflops"] = 0.5
    frame["pct_of_peak"] = 25.0
    frame["arithmetic_intensity"] = frame["top_k"] * 10.0
    plot = plot_roofline(synthetic_run(frame))
    ax = plot.figure.axes[0]
    ceilings = ax.get_lines()
    assert len(ceilings) == 1
    # 0.5 TFLOP/s is 25% of peak, so the ceiling is 0.5 / 0.25 = 2 TFLOP/s at every intensity.
    assert list(ceilings[0].get_ydata()) == pytest.approx([2.0] * len(ceilings[0].get_ydata()))
    assert ax.get_title() == "cpu (Test CPU): peak 2 TFLOP/s"
    assert len(ax.collections) == 3
    assert ax.get_xlabel() == "arithmetic intensity (FLOP/byte, log scale)"
    assert ax.get_ylabel() == "achieved TFLOP/s (log scale)"


def test_roofline_memory_roof_from_bandwidth():
    frame = synthetic_frame()
    frame["achieved_tflops"] = 0.5
    frame["pct_of_peak"] = 25.0
    frame["arithmetic_intensity"] = frame["top_k"] * 10.0
    frame["peak_bandwidth_gb_s"] = 100.0
    plot = plot_roofline(synthetic_run(frame))
    ceiling = plot.figure.axes[0].get_lines()[0]
    # 100 GB/s x I FLOP/byte = 0.1 * I TFLOP/s up to the 2 TFLOP/s peak: the ridge is at I = 20.
    for intensity, tflops in zip(ceiling.get_xdata(), ceiling.get_ydata()):
        assert tflops == pytest.approx(min(2.0, 0.1 * intensity))
    assert min(ceiling.get_xdata()) < 20 < max(ceiling.get_xdata())
    assert not plot.notes


def test_roofline_left_out_without_calibration():
    with pytest.raises(PlotNotApplicable, match="achieved_tflops"):
        plot_roofline(synthetic_run())


def test_device_bars_one_bar_per_device():
    frame = synthetic_frame()
    gpu = frame.assign(device="cuda", device_name="Test GPU", latency_ms_median=frame["latency_ms_median"] / 10)
    plot = plot_device_bars(synthetic_run(pd.concat([frame, gpu], ignore_index=True)))
    ax = plot.figure.axes[0]
    # 36 measured case groups (3 variants x 2 n x 3 k x 2 batch), one bar per device.
    assert len(ax.patches) == 72
    assert ax.get_xlabel() == "median latency (ms, log scale)"
    assert [text.get_text() for text in ax.get_legend().get_texts()] == ["Test CPU", "Test GPU"]


def test_device_bars_left_out_for_one_device():
    with pytest.raises(PlotNotApplicable, match="single device"):
        plot_device_bars(synthetic_run())


def test_build_plots_gives_reasons():
    plots = {plot.name: plot for plot in build_plots(synthetic_run())}
    drawn = sorted(name for name, plot in plots.items() if plot.figure is not None)
    assert drawn == ["gflops_vs_top_k", "latency_vs_top_k", "peak_memory_vs_batch_size", "speedup_vs_batch_size"]
    assert "single seq_len" in plots["speedup_vs_seq_len"].reason
    assert "achieved_tflops" in plots["roofline"].reason
    assert "single device" in plots["latency_by_device"].reason


def test_save_plots_writes_valid_images(tmp_path):
    plots = [plot_latency_vs_top_k(synthetic_run())]
    paths = save_plots(plots, tmp_path / "plots", ("png", "svg"))
    assert [path.name for path in paths] == ["latency_vs_top_k.png", "latency_vs_top_k.svg"]
    with Image.open(paths[0]) as image:
        image.verify()
        assert image.format == "PNG"
    with Image.open(paths[0]) as image:
        assert image.width > 500
        assert image.height > 300
    assert "<svg" in paths[1].read_text()


def test_device_bars_summarise_large_sweep(monkeypatch):
    monkeypatch.setattr("meobench.plots.MAX_BAR_GROUPS", 10)
    frame = synthetic_frame()
    gpu = frame.assign(device="cuda", device_name="Test GPU", latency_ms_median=frame["latency_ms_median"] / 10)
    plot = plot_device_bars(synthetic_run(pd.concat([frame, gpu], ignore_index=True)))
    ax = plot.figure.axes[0]
    # 36 case groups > 10, so one row per variant: 3 variants x 2 devices.
    assert len(ax.patches) == 6
    assert [label.get_text() for label in ax.get_yticklabels()] == ["dense", "moe-sequence", "meo-sequence"]
    # meo-sequence on the CPU: 3*b ms for b = 1 and 8 in each of 6 (n, k) groups; geometric mean sqrt(3 * 24).
    cpu_bars = ax.containers[0]
    assert cpu_bars[2].get_width() == pytest.approx((3.0 * 24.0) ** 0.5)
    assert ax.containers[1][2].get_width() == pytest.approx((3.0 * 24.0) ** 0.5 / 10)
    assert "36 case groups" in plot.notes[0]
    assert "the 36 groups every device measured" in plot.notes[0]
