import json

import pytest

from meobench import calibrate
from meobench.calibrate import Calibration
from meobench.cases import Case, CaseGroup
from meobench.results import CaseResult
from meobench.roofline import achieved_tflops, bound, fill_roofline, pct_of_peak, ridge_flop_per_byte
from meobench.timing import Measurement

GROUP = CaseGroup(4, 2, 2, 16, 64, 128, "linear", "float32", "cpu")


def _calibration(tflops: float = 4.0, copy_gb_per_s: float = 100.0) -> Calibration:
    return Calibration(
        fingerprint={"kind": "cpu", "name": "Test CPU", "logical_cores": 2, "threads": 1},
        matmul_tflops={"float32": tflops}, copy_gb_per_s=copy_gb_per_s, matmul_size={"float32": 1024},
        copy_bytes=2**27, measured_utc="2026-01-01T00:00:00+00:00",
    )  # fmt: skip


def test_achieved_and_pct_of_peak():
    # 3e12 FLOPs in 1.5 s = 2 TFLOP/s, half of a 4 TFLOP/s peak.
    assert achieved_tflops(3_000_000_000_000, 1.5) == pytest.approx(2.0)
    assert pct_of_peak(2.0, 4.0) == pytest.approx(50.0)
    assert achieved_tflops(None, 1.0) is None
    assert pct_of_peak(2.0, None) is None


def test_ridge_point_and_bound():
    # 4 TFLOP/s over 100 GB/s: 4e12 / 1e11 = 40 FLOP/byte.
    assert _calibration().ridge_flop_per_byte == {"float32": pytest.approx(40.0)}
    assert ridge_flop_per_byte(4.0, 100.0) == pytest.approx(40.0)
    assert ridge_flop_per_byte(4.0, None) is None
    assert bound(39.9, 40.0) == "memory"
    assert bound(40.0, 40.0) == "compute"
    assert bound(None, 40.0) == ""


def test_fill_roofline_sets_row_columns():
    # 1e9 FLOPs, median 2 ms: 0.5 TFLOP/s, 12.5% of 4 TFLOP/s.
    result = CaseResult("s", Case(GROUP, "dense", "none"), "inference", flops=10**9,
                        measurement=Measurement((0.001, 0.002, 0.003), "max_repeats"))  # fmt: skip
    fill_roofline([result], {"cpu": _calibration()})
    row = result.to_row()
    assert row["achieved_tflops"] == pytest.approx(0.5)
    assert row["pct_of_peak"] == pytest.approx(12.5)
    assert row["peak_bandwidth_gb_s"] == pytest.approx(100.0)
    assert row["bound"] == ""  # no arithmetic_intensity column yet
    assert result.warnings == []


def test_fill_roofline_warns_above_peak():
    # 1e9 FLOPs in 0.1 ms = 10 TFLOP/s, 250% of a 4 TFLOP/s calibration.
    result = CaseResult("s", Case(GROUP, "dense", "none"), "inference", flops=10**9,
                        measurement=Measurement((0.0001,), "max_repeats"))  # fmt: skip
    fill_roofline([result], {"cpu": _calibration()})
    assert "250% of the calibrated float32 peak" in result.warnings[0]


def test_uncalibrated_device_leaves_columns_empty():
    result = CaseResult("s", Case(GROUP, "dense", "none"), "inference", flops=10**9,
                        measurement=Measurement((0.001,), "max_repeats"))  # fmt: skip
    fill_roofline([result], {})
    assert result.to_row()["pct_of_peak"] is None
    assert result.to_row()["bound"] == ""


def test_measure_and_cache_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv("MEOBENCH_CACHE_DIR", str(tmp_path))
    monkeypatch.setitem(calibrate.MATMUL_SIZE, "cpu", 128)
    monkeypatch.setitem(calibrate.COPY_BYTES, "cpu", 2**20)
    measured = calibrate.measure("cpu", dtypes=("float32",))
    assert measured.matmul_tflops["float32"] > 0
    assert measured.copy_gb_per_s > 0
    assert measured.matmul_size == {"float32": 128}

    path = calibrate.save(measured)
    assert path.parent == tmp_path / "calibration"
    assert calibrate.load_cached("cpu") == measured


def test_cache_of_other_hardware_is_ignored(tmp_path, monkeypatch):
    monkeypatch.setenv("MEOBENCH_CACHE_DIR", str(tmp_path))
    path = calibrate.cache_path(calibrate.device_fingerprint("cpu"))
    path.parent.mkdir(parents=True)
    other = _calibration().to_json()
    path.write_text(json.dumps(other))
    assert calibrate.load_cached("cpu") is None


def test_unreadable_cache_is_ignored(tmp_path, monkeypatch):
    monkeypatch.setenv("MEOBENCH_CACHE_DIR", str(tmp_path))
    path = calibrate.cache_path(calibrate.device_fingerprint("cpu"))
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    assert calibrate.load_cached("cpu") is None


def test_measured_row_gets_bound():
    from meobench.cases import expand
    from meobench.runner import Runner
    from meobench.scenario import parse_scenario

    scenario = parse_scenario(
        "name: tiny\nvariants: [dense]\nsweep: {num_experts: 2, top_k: 1, batch_size: 1, seq_len: 4, d_model: 8, "
        "d_ff: 8, device: cpu}\nmeasure: {warmup: 0, min_repeats: 2, max_repeats: 2}\n"
    )
    [result] = Runner(scenario).iterate(expand(scenario))
    # Ridge point 4 TFLOP/s / 100 GB/s = 40 FLOP/byte; a tiny dense linear is far below it.
    fill_roofline([result], {"cpu": _calibration()})
    row = result.to_row()
    assert 0 < row["arithmetic_intensity"] < 40
    assert row["bound"] == "memory"
