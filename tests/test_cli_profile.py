import csv
import json

import pytest
import torch
from typer.testing import CliRunner

from meobench.cli import app
from meobench.errors import ScenarioError
from meobench.results import COLUMNS
from meobench.scenario import parse_scenario

runner = CliRunner()

TINY = """\
name: tiny
variants: [dense, moe-token, meo-sequence]
threads: 1
sweep: {num_experts: 4, top_k: 2, batch_size: 2, seq_len: 8, d_model: 32, d_ff: 48, device: cpu}
measure: {warmup: 1, min_repeats: 3, max_repeats: 3, max_time_s: 1.0, profile_warmup: 1, profile_active: 2}
"""
MOE_CASE = "moe-token.loop.n4-k2-b2-l8-d32-f48-linear-float32-cpu"


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return path


def read_rows(path):
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_profile_by_prefix_writes_traces(tiny, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(app, ["profile", str(tiny), "--case", "moe-token", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "sum of phases" in result.output
    assert "Top operators by self CPU time" in result.output
    assert len(list((out / "traces").glob(f"{MOE_CASE}.*.pt.trace.json"))) == 1
    assert (out / "chrome" / f"{MOE_CASE}.json").exists()
    assert (out / "operators" / f"{MOE_CASE}.csv").exists()
    rows = read_rows(out / "results.csv")
    assert [row["case_id"] for row in rows] == [MOE_CASE]
    for phase in ("router", "dispatch", "expert", "combine"):
        assert float(rows[0][f"phase_{phase}_ms"]) >= 0
    assert rows[0]["phase_merge_ms"] == ""
    assert rows[0]["phase_clock"] == "cpu"
    assert float(rows[0]["profiled_call_ms"]) > 0


def test_profile_unknown_case_exits_2(tiny):
    result = runner.invoke(app, ["profile", str(tiny), "--case", "moe-tokn.loop"])
    assert result.exit_code == 2
    assert "is not a case of" in result.output
    assert "--dry-run" in result.output


def test_profile_ambiguous_prefix_exits_2(tiny):
    result = runner.invoke(app, ["profile", str(tiny), "--case", "m"])
    assert result.exit_code == 2
    assert "matches 2 cases" in result.output


def test_profile_without_active_steps_exits_2(tmp_path):
    path = tmp_path / "off.yaml"
    path.write_text(TINY.replace("profile_active: 2", "profile_active: 0"))
    result = runner.invoke(app, ["profile", str(path), "--case", "dense"])
    assert result.exit_code == 2
    assert "measure.profile_active is 0" in result.output


def test_run_trace_writes_one_trace_per_case(tiny, tmp_path):
    out = tmp_path / "run"
    threads_before = torch.get_num_threads()
    result = runner.invoke(app, ["run", str(tiny), "--out", str(out), "--trace"])
    assert result.exit_code == 0, result.output
    assert len(list((out / "traces").glob("*.pt.trace.json"))) == 3
    rows = read_rows(out / "results.csv")
    assert list(rows[0]) == list(COLUMNS)
    assert {row["threads"] for row in rows} == {"1"}
    assert torch.get_num_threads() == threads_before
    meo = next(row for row in rows if row["variant"] == "meo-sequence")
    # Merged weights: 2 sequences x 48 x 32 float32 = 12,288 bytes.
    assert float(meo["mem_model_mib"]) * 2**20 == pytest.approx(12288)
    assert float(meo["mem_model_ratio"]) >= 1.0
    assert next(row for row in rows if row["variant"] == "dense")["mem_model_mib"] == ""


def test_train_run_times_parts(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text(TINY.replace("threads: 1", "mode: train"))
    out = tmp_path / "train"
    result = runner.invoke(app, ["run", str(path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    for row in read_rows(out / "results.csv"):
        assert float(row["forward_ms_median"]) > 0
        assert float(row["backward_ms_median"]) > 0
        assert float(row["optimizer_ms_median"]) > 0
    cases = json.loads((out / "results.json").read_text())["cases"]
    assert all(case["status"] == "ok" for case in cases)


def test_scenario_options_parse():
    scenario = parse_scenario(TINY.replace("threads: 1", "threads: 2\ncompile: true"))
    assert scenario.threads == 2
    assert scenario.compile is True
    assert scenario.measure.profile_active == 2


def test_scenario_rejects_zero_threads():
    with pytest.raises(ScenarioError, match="threads"):
        parse_scenario(TINY.replace("threads: 1", "threads: 0"))


@pytest.mark.slow
def test_compiled_case_reports_compile_time(tmp_path):
    path = tmp_path / "compiled.yaml"
    path.write_text(TINY.replace("[dense, moe-token, meo-sequence]", "[dense]").replace("threads: 1", "compile: true"))
    out = tmp_path / "compiled"
    result = runner.invoke(app, ["run", str(path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    row = read_rows(out / "results.csv")[0]
    assert row["status"] == "ok"
    assert float(row["compile_s"]) > 0
    assert row["phase_sum_ms"] == ""
    assert "torch.compile drops record_function ranges" in row["warnings"]
