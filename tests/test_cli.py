import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from meobench.cli import app
from meobench.results import COLUMNS

SMOKE = Path(__file__).resolve().parent.parent / "scenarios" / "smoke.yaml"
REQUIRED_COLUMNS = [
    "scenario", "case_id", "variant", "strategy", "expert_kind", "num_experts", "top_k", "batch_size", "seq_len",
    "d_model", "d_ff", "dtype", "device", "mode", "params", "active_params", "gflops", "latency_ms_median",
    "latency_ms_iqr", "latency_ms_min", "repeats", "tokens_per_s", "peak_mem_mib", "fidelity_rel_err",
    "speedup_vs_moe", "status", "error",
]  # fmt: skip

runner = CliRunner()


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke")
    result = runner.invoke(app, ["run", str(SMOKE), "--out", str(out), "--report"])
    return result, out


@pytest.mark.slow
def test_smoke_run_writes_csv_columns(smoke_run):
    result, out = smoke_run
    assert result.exit_code == 0, result.output
    with (out / "results.csv").open() as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    assert reader.fieldnames[: len(REQUIRED_COLUMNS)] == REQUIRED_COLUMNS
    assert list(reader.fieldnames) == list(COLUMNS)
    # smoke: 2 top_k x 2 expert kinds = 4 groups of 22 cases
    # (dense 1, three MoE variants x 3 strategies, three MEO variants x 4 strategies).
    assert len(rows) == 88
    assert {row["status"] for row in rows} == {"ok"}
    assert {row["flops_check"] for row in rows} == {"ok"}
    assert all(float(row["gflops_analytic"]) > 0 for row in rows)


@pytest.mark.slow
def test_smoke_run_fidelity_and_json(smoke_run):
    _, out = smoke_run
    document = json.loads((out / "results.json").read_text())
    assert document["schema_version"] == 2
    assert document["complete"] is True
    assert document["scenario"]["name"] == "smoke"
    assert "torch_version" in document["environment"]
    cases = document["cases"]
    assert all(len(case["latency_samples_s"]) == case["repeats"] for case in cases)
    linear_meo = [c for c in cases if c["variant"] in ("meo-sequence", "meo-task") and c["expert_kind"] == "linear"]
    assert linear_meo and all(c["fidelity_rel_err"] < 1e-5 for c in linear_meo)
    jsonl = (out / "results.jsonl").read_text().splitlines()
    assert len(jsonl) == len(cases)


@pytest.mark.slow
def test_smoke_run_prints_table(smoke_run):
    result, _ = smoke_run
    assert "median (ms)" in result.output
    assert "88 ok" in result.output


@pytest.mark.slow
def test_smoke_run_report(smoke_run):
    result, out = smoke_run
    page = (out / "report.html").read_text()
    # smoke sweeps top_k (1, 2) but a single batch size, so it gets the top-k plots and no batch plot.
    assert page.count('<img src="data:image/png;base64,') == 2
    assert 'alt="Latency against top-k"' in page
    assert "Peak memory against batch size: the run measured a single batch_size (2)" in page
    assert (out / "plots" / "gflops_vs_top_k.png").is_file()
    assert "Left out 'Latency per device'" in result.output


def test_dry_run_lists_cases():
    result = runner.invoke(app, ["run", str(SMOKE), "--dry-run"])
    assert result.exit_code == 0
    assert "88 cases: 88 to run, 0 to skip." in result.output


def test_dry_run_shows_skip_reason(tmp_path):
    scenario = tmp_path / "s.yaml"
    scenario.write_text("name: s\nvariants: [moe-token]\nsweep: {num_experts: [2, 4], top_k: [4], device: cpu}\n")
    result = runner.invoke(app, ["run", str(scenario), "--dry-run"])
    assert result.exit_code == 0
    assert "2 cases: 1 to run, 1 to skip." in result.output
    assert "top_k=4 is larger than num_experts=2" in result.output


def test_bad_scenario_exits_2_without_traceback(tmp_path):
    scenario = tmp_path / "bad.yaml"
    scenario.write_text("name: bad\nvariants: [dense]\nsweep:\n  batchsize: [1]\n")
    result = runner.invoke(app, ["run", str(scenario)])
    assert result.exit_code == 2
    assert "sweep.batchsize: unknown key (did you mean 'batch_size'?)" in result.output
    assert "Traceback" not in result.output


def test_validate_reports_case_count():
    result = runner.invoke(app, ["validate", str(SMOKE)])
    assert result.exit_code == 0
    assert "valid scenario 'smoke' with 88 cases" in result.output


def test_missing_scenario_exits_2(tmp_path):
    result = runner.invoke(app, ["validate", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 2
    assert "scenario file not found" in result.output


def test_invalid_device_option_exits_2():
    result = runner.invoke(app, ["run", str(SMOKE), "--device", "gpu0", "--dry-run"])
    assert result.exit_code == 2
    assert "--device 'gpu0' is not a device" in result.output


def test_absent_device_is_skipped(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA, so a CUDA case would run")
    scenario = tmp_path / "s.yaml"
    scenario.write_text(
        "name: s\nvariants: [dense]\nsweep: {num_experts: 2, top_k: 1, device: cuda, d_model: 8, d_ff: 8}\n"
    )
    result = runner.invoke(app, ["run", str(scenario), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0
    row = next(csv.DictReader((tmp_path / "out" / "results.csv").open()))
    assert row["status"] == "skipped"
    assert "device cuda is not available" in row["error"]
    assert "1 of 1 cases skipped:" in result.output
    assert "1 x device cuda is not available" in result.output


def test_absent_device_option_is_an_error(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    scenario = tmp_path / "s.yaml"
    scenario.write_text("name: s\nvariants: [dense]\nsweep: {num_experts: 2, top_k: 1, d_model: 8, d_ff: 8}\n")
    result = runner.invoke(app, ["run", str(scenario), "--device", "cuda", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "--device cuda: device cuda is not available" in result.output
    assert "--device auto" in result.output
    assert not (tmp_path / "out").exists()


def test_list_shows_variants_and_scenarios():
    result = runner.invoke(app, ["list"])
    assert result.exit_code == 0
    assert "meo-token" in result.output
    assert "smoke.yaml" in result.output


def test_env_shows_torch_version():
    result = runner.invoke(app, ["env"])
    assert result.exit_code == 0
    assert "torch_version" in result.output


@pytest.fixture(scope="module")
def smoke_flops(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke-flops")
    result = runner.invoke(app, ["flops", str(SMOKE), "--out", str(out)])
    return result, out


def test_flops_command_checks_every_case(smoke_flops):
    result, out = smoke_flops
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 88  # 4 groups of 22 cases, as in test_smoke_run_writes_csv_columns
    assert {row["flops_check"] for row in rows} == {"ok"}
    # nothing is timed or run for real
    assert {row["latency_ms_median"] for row in rows} == {""}
    assert {row["fidelity_rel_err"] for row in rows} == {""}
    for row in rows:
        assert float(row["gflops"]) == pytest.approx(2 * float(row["gmacs"]), rel=1e-9)


def test_flops_command_writes_details(smoke_flops):
    result, out = smoke_flops
    assert "GFLOP analytic" in result.output
    assert "88 ok" in result.output
    cases = json.loads((out / "results.json").read_text())["cases"]
    moe = next(case for case in cases if case["variant"] == "moe-token" and case["strategy"] == "loop")
    assert {entry["op"] for entry in moe["flops_detail"]["uncounted_ops"]} >= {"aten::topk", "aten::index_add_"}
    meo = next(case for case in cases if case["variant"] == "meo-sequence" and case["strategy"] == "gemm")
    assert 0 < meo["flops_detail"]["meo_to_moe_flop_ratio"]


def test_flops_command_train_mode_is_not_checked(tmp_path):
    scenario = tmp_path / "train.yaml"
    scenario.write_text(
        "name: t\nvariants: [meo-sequence]\nmode: train\n"
        "sweep: {num_experts: 2, top_k: 1, batch_size: 1, seq_len: 4, d_model: 8, d_ff: 8, device: cpu}\n"
    )
    result = runner.invoke(app, ["flops", str(scenario), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    row = next(csv.DictReader((tmp_path / "out" / "results.csv").open()))
    assert row["flops_check"] == "not checked: the analytic model covers inference only"
    assert float(row["gflops"]) > 0
    assert row["gflops_analytic"] == ""


def test_result_files_get_the_default_mode(tmp_path):
    scenario = tmp_path / "s.yaml"
    scenario.write_text(
        "name: s\nvariants: [dense]\nsweep: {num_experts: 2, top_k: 1, d_model: 8, d_ff: 8}\n"
        "measure: {warmup: 0, min_repeats: 1, max_repeats: 1}\n"
    )
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", str(scenario), "--out", str(out)])
    assert result.exit_code == 0, result.output
    # results.jsonl is opened plainly; the files written through a temporary file and a rename match it.
    modes = {name: (out / name).stat().st_mode & 0o777 for name in ("results.jsonl", "results.csv", "results.json")}
    assert modes["results.csv"] == modes["results.jsonl"]
    assert modes["results.json"] == modes["results.jsonl"]
