import time

import pytest

from meobench.timing import Measurement, TimingSettings, measure_latency


def test_statistics_hand_computed():
    # Sorted samples 1, 2, 3, 4, 10 (seconds). Median 3.
    # Inclusive quartiles: positions 1 + 0.25 * 4 = 2 -> 2.0, and 1 + 0.75 * 4 = 4 -> 4.0, so IQR = 2.0.
    m = Measurement((3.0, 1.0, 10.0, 2.0, 4.0), "max_repeats")
    assert m.median_s == 3.0
    assert m.min_s == 1.0
    assert m.iqr_s == 2.0
    assert m.rel_iqr == pytest.approx(2.0 / 3.0)
    assert m.repeats == 5


def test_single_sample_has_zero_iqr():
    assert Measurement((0.5,), "max_repeats").iqr_s == 0.0


def test_repeats_bounded_by_max():
    calls = []
    settings = TimingSettings(warmup=2, min_repeats=3, max_repeats=7, max_time_s=60.0, target_rel_iqr=0.0)
    m = measure_latency(lambda: calls.append(1), "cpu", settings)
    assert m.repeats == 7
    assert len(calls) == 2 + 7  # warm-up calls are not timed
    assert m.stop_reason == "max_repeats"


def test_time_budget_stops_after_min_repeats():
    settings = TimingSettings(warmup=0, min_repeats=2, max_repeats=1000, max_time_s=0.01, target_rel_iqr=0.0)
    m = measure_latency(lambda: time.sleep(0.02), "cpu", settings)
    assert m.repeats == 2
    assert m.stop_reason == "time_budget"


def test_timer_measures_what_runs():
    settings = TimingSettings(warmup=1, min_repeats=3, max_repeats=3, max_time_s=10.0, target_rel_iqr=0.0)
    m = measure_latency(lambda: time.sleep(0.05), "cpu", settings)
    # sleep() never returns early; the upper bound allows for a busy machine.
    assert 0.05 <= m.min_s < 0.5


def test_noise_warning():
    m = measure_latency(lambda: None, "cpu", TimingSettings(warmup=0, min_repeats=1, max_repeats=1))
    assert any("IQR is unreliable" in w for w in m.warnings)
