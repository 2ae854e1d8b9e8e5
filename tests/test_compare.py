import pytest
from typer.testing import CliRunner

from meobench.cli import app
from meobench.compare import check_comparable, comparison_frame, join_keys, run_labels
from meobench.runs import load_run
from tests.result_files import make_case, make_document, write_run

runner = CliRunner()
GPU_A = {"kind": "cuda", "name": "GPU A", "compute_capability": "8.0", "sm_count": 108}
GPU_B = {"kind": "cuda", "name": "GPU B", "compute_capability": "9.0", "sm_count": 132}


def _gpu_document(device: dict, latencies_ms: dict[str, float]) -> dict:
    cases = [
        make_case(variant, samples_ms=(value,), device="cuda", device_name=device["name"], latency_ms_median=value)
        for variant, value in latencies_ms.items()
    ]
    document = make_document(cases)
    document["environment"]["devices"] = {"cuda": device}
    return document


def test_frame_joins_on_parameters_with_ratios(tmp_path):
    # Run B lists its cases in the other order; the join must still pair dense with dense.
    a = load_run(write_run(tmp_path / "a", _gpu_document(GPU_A, {"dense": 2.0, "moe-token": 8.0})))
    b = load_run(write_run(tmp_path / "b", _gpu_document(GPU_B, {"moe-token": 2.0, "dense": 1.0})))
    frame = comparison_frame([a, b], ("latency_ms_median",))
    assert run_labels([a, b]) == ["GPU A", "GPU B"]
    dense = frame[frame["variant"] == "dense"].iloc[0]
    moe = frame[frame["variant"] == "moe-token"].iloc[0]
    # dense: 1.0 / 2.0; moe-token: 2.0 / 8.0.
    assert dense["latency_ms_median ratio [GPU B]"] == pytest.approx(0.5)
    assert moe["latency_ms_median ratio [GPU B]"] == pytest.approx(0.25)


def test_frame_outer_join_keeps_missing_cases(tmp_path):
    a = load_run(write_run(tmp_path / "a", _gpu_document(GPU_A, {"dense": 2.0, "moe-token": 8.0})))
    b = load_run(write_run(tmp_path / "b", _gpu_document(GPU_B, {"dense": 1.0})))
    frame = comparison_frame([a, b], ("latency_ms_median",))
    assert len(frame) == 2
    assert frame[frame["variant"] == "moe-token"]["latency_ms_median [GPU B]"].isna().all()


def test_single_device_runs_join_without_device(tmp_path):
    cpu = load_run(write_run(tmp_path / "cpu", make_document([make_case()])))
    gpu = load_run(write_run(tmp_path / "gpu", _gpu_document(GPU_A, {"dense": 1.0})))
    assert "device" not in join_keys([cpu, gpu])
    assert len(comparison_frame([cpu, gpu], ("latency_ms_median",))) == 1


def test_same_device_labels_by_folder(tmp_path):
    a = load_run(write_run(tmp_path / "monday", make_document([make_case()])))
    b = load_run(write_run(tmp_path / "tuesday", make_document([make_case()])))
    assert run_labels([a, b]) == ["monday", "tuesday"]


def test_software_stack_difference_reported(tmp_path):
    a = load_run(write_run(tmp_path / "a", make_document([make_case()])))
    document = make_document([make_case()])
    document["environment"]["torch_version"] = "2.14.0"
    b = load_run(write_run(tmp_path / "b", document))
    assert check_comparable(a, b).stack == ["torch_version: '2.13.0+cpu' vs '2.14.0'"]


def test_timing_settings_difference_is_a_note(tmp_path):
    a = load_run(write_run(tmp_path / "a", make_document([make_case()])))
    document = make_document([make_case()])
    document["scenario"]["measure"]["max_repeats"] = 9
    b = load_run(write_run(tmp_path / "b", document))
    comparability = check_comparable(a, b)
    assert comparability.scenario == []
    assert comparability.notes == ["timing settings differ: max_repeats: 50 vs 9"]


def test_cli_compare_markdown(tmp_path):
    a = write_run(tmp_path / "a", _gpu_document(GPU_A, {"dense": 2.0}))
    b = write_run(tmp_path / "b", _gpu_document(GPU_B, {"dense": 1.0}))
    result = runner.invoke(app, ["compare", str(a), str(b), "--markdown", "-m", "latency_ms_median"])
    assert result.exit_code == 0, result.output
    assert "| median (ms) [GPU A] | median (ms) [GPU B] | median ratio [GPU B] |" in result.output
    assert "| 2 | 1 | 0.5 |" in result.output


def test_cli_compare_csv_has_every_case(tmp_path):
    a = write_run(tmp_path / "a", make_document([make_case("dense"), make_case("moe-token")]))
    b = write_run(tmp_path / "b", make_document([make_case("moe-token"), make_case("dense")]))
    result = runner.invoke(app, ["compare", str(a), str(b), "--csv"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0].startswith("variant,strategy,")
    assert len(lines) == 3


def test_cli_compare_warns_other_scenario(tmp_path):
    a = write_run(tmp_path / "a", make_document([make_case()]))
    document = make_document([make_case()])
    document["scenario"]["seed"] = 7
    b = write_run(tmp_path / "b", document)
    result = runner.invoke(app, ["compare", str(a), str(b)])
    assert result.exit_code == 0
    assert "NOT COMPARABLE" in result.output
    assert "seed: 0 vs 7" in result.output


def test_cli_compare_unknown_metric_exits_2(tmp_path):
    a = write_run(tmp_path / "a", make_document([make_case()]))
    result = runner.invoke(app, ["compare", str(a), "-m", "speed"])
    assert result.exit_code == 2
    assert "--metric 'speed' is not a metric" in result.output


def test_frame_keeps_first_run_order(tmp_path):
    a = load_run(write_run(tmp_path / "a", _gpu_document(GPU_A, {"moe-token": 8.0, "dense": 2.0})))
    b = load_run(write_run(tmp_path / "b", _gpu_document(GPU_B, {"dense": 1.0, "moe-token": 2.0})))
    frame = comparison_frame([a, b], ("latency_ms_median",))
    assert list(frame["variant"]) == ["moe-token", "dense"]


def test_cli_compare_table_shows_bracketed_labels(tmp_path):
    # Labels are run folder names in brackets, which rich would read as markup unless escaped.
    a = write_run(tmp_path / "b", make_document([make_case()]))
    b = write_run(tmp_path / "i", make_document([make_case()]))
    result = runner.invoke(app, ["compare", str(a), str(b), "-m", "latency_ms_median"])
    assert result.exit_code == 0, result.output
    assert "median (ms) [b]" in result.output
    assert "median ratio [i]" in result.output
