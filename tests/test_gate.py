import random

import pytest
from typer.testing import CliRunner

from meobench.cli import app
from meobench.gate import GateSettings, NotComparableError, gate_runs, latency_check, mann_whitney_p
from meobench.runs import load_run
from tests.result_files import CPU, make_case, make_document, write_run

SETTINGS = GateSettings(max_latency_regression=0.10, latency_floor_ms=0.05, alpha=0.05)
runner = CliRunner()


def ms(*values: float) -> list[float]:
    return [value / 1e3 for value in values]


def test_mann_whitney_exact_p_value():
    # 5 vs 5 samples with no overlap: only 1 of C(10, 5) = 252 rankings is this extreme
    # in each direction, so the two-sided exact p-value is 2 / 252.
    assert mann_whitney_p([1, 2, 3, 4, 5], [6, 7, 8, 9, 10]) == pytest.approx(2 / 252)
    # 3 vs 3: C(6, 3) = 20 rankings, two-sided p = 2 / 20.
    assert mann_whitney_p([1, 2, 3], [4, 5, 6]) == pytest.approx(0.1)


def test_latency_shifted_up_is_regression():
    check = latency_check("case", ms(1, 2, 3, 4, 5), ms(6, 7, 8, 9, 10), SETTINGS)
    assert check.outcome == "regression"
    # Medians 3 ms and 8 ms: ratio 8 / 3.
    assert check.ratio == pytest.approx(8 / 3)
    assert check.baseline == pytest.approx(3.0)
    assert check.current == pytest.approx(8.0)
    assert check.p_value == pytest.approx(2 / 252)


def test_latency_shifted_down_is_improvement():
    check = latency_check("case", ms(6, 7, 8, 9, 10), ms(1, 2, 3, 4, 5), SETTINGS)
    assert check.outcome == "improvement"
    assert check.ratio == pytest.approx(3 / 8)


def test_latency_too_few_samples_is_ambiguous():
    # Medians 2 ms and 5 ms (ratio 2.5) but the smallest possible p with 3 + 3 samples is 0.1 > alpha.
    check = latency_check("case", ms(1, 2, 3), ms(4, 5, 6), SETTINGS)
    assert check.outcome == "ambiguous"
    assert check.ratio == pytest.approx(2.5)


def test_latency_identical_samples_pass():
    check = latency_check("case", ms(1, 2, 3, 4, 5), ms(1, 2, 3, 4, 5), SETTINGS)
    assert check.outcome == "pass"
    assert check.p_value == pytest.approx(1.0)


def test_latency_under_floor_passes():
    # Twice as slow and significant (p = 2 / 252), but the medians differ by
    # 0.026 - 0.013 = 0.013 ms, under the 0.05 ms floor.
    check = latency_check(
        "case", ms(0.011, 0.012, 0.013, 0.014, 0.015), ms(0.024, 0.025, 0.026, 0.027, 0.028), SETTINGS
    )
    assert check.outcome == "pass"
    assert check.ratio == pytest.approx(2.0)


def test_latency_shift_below_threshold_passes():
    # 5% slower with no overlap: significant, but under the 10% threshold.
    check = latency_check("case", ms(10.0, 10.1, 10.2, 10.3, 10.4), ms(10.6, 10.65, 10.71, 10.75, 10.8), SETTINGS)
    assert check.outcome == "pass"
    assert check.ratio == pytest.approx(10.71 / 10.2)


def test_noisy_unshifted_pairs_rarely_regress():
    # 200 seeded pairs drawn from one log-normal distribution (sigma 0.3, so IQR is
    # about 40% of the median): a regression needs p < alpha and the median ratio
    # on the slow side, so at most alpha / 2 = 2.5% should regress on average.
    regressions = 0
    for seed in range(200):
        rng = random.Random(seed)
        baseline = [rng.lognormvariate(0, 0.3) * 10e-3 for _ in range(30)]
        current = [rng.lognormvariate(0, 0.3) * 10e-3 for _ in range(30)]
        regressions += latency_check("case", baseline, current, SETTINGS).outcome == "regression"
    assert regressions <= 200 * SETTINGS.alpha


def test_noisy_pair_scaled_by_half_regresses():
    rng = random.Random(0)
    baseline = [rng.lognormvariate(0, 0.3) * 10e-3 for _ in range(30)]
    current = [rng.lognormvariate(0, 0.3) * 10e-3 * 1.5 for _ in range(30)]
    assert latency_check("case", baseline, current, SETTINGS).outcome == "regression"


def _gate(tmp_path, baseline_cases, current_cases, current_device=None, latency=True):
    baseline = load_run(write_run(tmp_path / "base", make_document(baseline_cases)))
    current = load_run(write_run(tmp_path / "current", make_document(current_cases, current_device)))
    return gate_runs(baseline, current, SETTINGS, latency=latency)


def test_gate_identical_flops_pass(tmp_path):
    report = _gate(tmp_path, [make_case()], [make_case()])
    assert report.exit_status == 0
    assert {check.metric for check in report.checks} == {"flops", "params", "active_params", "latency"}


def test_gate_one_flop_change_fails(tmp_path):
    report = _gate(tmp_path, [make_case()], [make_case(flops=4_831_838_209)])
    assert report.exit_status == 1
    [failed] = report.failed
    assert failed.metric == "flops"
    assert failed.outcome == "mismatch"


def test_gate_parameter_change_fails(tmp_path):
    report = _gate(tmp_path, [make_case()], [make_case(active_params=1)])
    assert [check.metric for check in report.failed] == ["active_params"]


def test_gate_joins_on_parameters_not_order(tmp_path):
    # The current run lists the cases in reverse order; each must meet its own baseline.
    baseline = [make_case("dense"), make_case("moe-token", samples_ms=(20, 21, 22, 23, 24))]
    current = [make_case("moe-token", samples_ms=(20, 21, 22, 23, 24)), make_case("dense")]
    report = _gate(tmp_path, baseline, current)
    assert report.exit_status == 0
    latency = [check for check in report.checks if check.metric == "latency"]
    assert [check.ratio for check in latency] == [1.0, 1.0]


def test_gate_failed_case_is_regression(tmp_path):
    report = _gate(tmp_path, [make_case()], [make_case(status="failed", error="RuntimeError: boom")])
    [failed] = report.failed
    assert failed.outcome == "regression"
    assert "RuntimeError: boom" in failed.reason


def test_gate_missing_case_is_regression(tmp_path):
    report = _gate(tmp_path, [make_case("dense"), make_case("moe-token")], [make_case("dense")])
    [failed] = report.failed
    assert "missing" in failed.reason


def test_gate_other_device_not_comparable(tmp_path):
    with pytest.raises(NotComparableError, match="cpu name: 'Test CPU 9000' vs 'Other CPU'"):
        _gate(tmp_path, [make_case()], [make_case()], current_device={**CPU, "name": "Other CPU"})


def test_gate_deterministic_only_ignores_device(tmp_path):
    report = _gate(tmp_path, [make_case()], [make_case()], current_device={**CPU, "name": "Other CPU"}, latency=False)
    assert report.exit_status == 0
    assert "latency" not in {check.metric for check in report.checks}
    assert any("Other CPU" in note for note in report.notes)


def test_gate_other_scenario_not_comparable(tmp_path):
    baseline = make_document([make_case()])
    current = make_document([make_case()])
    current["scenario"]["sweep"]["batch_size"] = [16]
    with pytest.raises(NotComparableError, match=r"sweep.batch_size: \[8\] vs \[16\]"):
        gate_runs(load_run(write_run(tmp_path / "a", baseline)), load_run(write_run(tmp_path / "b", current)), SETTINGS)


def test_gate_settings_from_scenario():
    settings = GateSettings.from_scenario({"gates": {"max_regression": {"latency": 0.25}, "alpha": 0.01}})
    assert settings == GateSettings(max_latency_regression=0.25, latency_floor_ms=0.05, alpha=0.01)


def _write_pair(tmp_path, current_case, current_device=None):
    base = write_run(tmp_path / "base", make_document([make_case()]))
    current = write_run(tmp_path / "current", make_document([current_case], current_device))
    return str(base), str(current)


def test_cli_gate_pass_exits_0(tmp_path):
    summary = tmp_path / "summary.md"
    result = runner.invoke(app, ["gate", *_write_pair(tmp_path, make_case()), "--summary", str(summary)])
    assert result.exit_code == 0, result.output
    assert "PASSED" in result.output
    assert summary.read_text().startswith("## meobench gate passed")


def test_cli_gate_regression_exits_1(tmp_path):
    # Baseline 1..5 ms against 6..10 ms: ratio 8 / 3, p = 2 / 252 (no overlap).
    summary = tmp_path / "summary.md"
    slower = make_case(samples_ms=(6, 7, 8, 9, 10))
    result = runner.invoke(app, ["gate", *_write_pair(tmp_path, slower), "--summary", str(summary)])
    assert result.exit_code == 1, result.output
    assert "regression" in summary.read_text()


def test_cli_gate_threshold_option_overrides(tmp_path):
    slower = make_case(samples_ms=(6, 7, 8, 9, 10))
    result = runner.invoke(app, ["gate", *_write_pair(tmp_path, slower), "--max-regression", "latency=200%"])
    # Ratio 8 / 3 = 2.67 stays under the limit 1 + 200% = 3, so it passes.
    assert result.exit_code == 0, result.output


def test_cli_gate_other_device_exits_2(tmp_path):
    summary = tmp_path / "summary.md"
    pair = _write_pair(tmp_path, make_case(), {**CPU, "name": "Other CPU"})
    result = runner.invoke(app, ["gate", *pair, "--summary", str(summary)])
    assert result.exit_code == 2
    assert "not comparable" in result.output
    assert summary.read_text().startswith("## meobench gate: not comparable")
    assert "cpu name: 'Test CPU 9000' vs 'Other CPU'" in summary.read_text()


def test_cli_gate_incomplete_run_exits_2(tmp_path):
    base = write_run(tmp_path / "base", make_document([make_case()]))
    current = write_run(tmp_path / "current", make_document([make_case()], complete=False))
    result = runner.invoke(app, ["gate", str(base), str(current)])
    assert result.exit_code == 2
    assert "is incomplete (interrupted)" in result.output


def test_cli_gate_bad_threshold_exits_2(tmp_path):
    result = runner.invoke(app, ["gate", *_write_pair(tmp_path, make_case()), "--max-regression", "memory=5%"])
    assert result.exit_code == 2
    assert "--max-regression 'memory=5%' is not valid" in result.output


def test_cli_gate_summary_lists_failures(tmp_path):
    summary = tmp_path / "summary.md"
    runner.invoke(app, ["gate", *_write_pair(tmp_path, make_case(flops=1)), "--summary", str(summary)])
    text = summary.read_text()
    assert "## meobench gate failed" in text
    assert "| flops | mismatch | 4831838208 | 1 |" in text
    assert "flops changed from 4831838208 to 1" in text


def test_deterministic_gate_across_device_kinds(tmp_path):
    # A CPU baseline gates a CUDA run's FLOPs: with one device per run, the device string does not join.
    gpu = {"kind": "cuda", "name": "Test GPU", "compute_capability": "9.0", "sm_count": 132}
    baseline = load_run(write_run(tmp_path / "cpu", make_document([make_case()])))
    current_document = make_document([make_case(device="cuda", device_name="Test GPU")])
    current_document["environment"]["devices"] = {"cuda": gpu}
    current = load_run(write_run(tmp_path / "cuda", current_document))
    report = gate_runs(baseline, current, SETTINGS, latency=False)
    assert report.exit_status == 0
    assert [check.metric for check in report.checks] == ["flops", "params", "active_params"]
