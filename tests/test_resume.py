"""Nothing finished is lost: the run directory checks, reading results.jsonl back, and --resume."""

import csv
import json
from collections import Counter

import pytest
from typer.testing import CliRunner

from meobench.cases import expand
from meobench.cli import app
from meobench.errors import MeobenchError
from meobench.layers import MOE_STRATEGIES
from meobench.layers.moe import run_loop
from meobench.results import CaseResult
from meobench.resume import environment_fingerprint, plan_resume, settings_fingerprint
from meobench.rundir import RunDirectory
from meobench.scenario import parse_scenario
from meobench.timing import Measurement
from tests.faults import faults, tiny_scenario  # noqa: F401 - faults is a fixture

runner = CliRunner()
SCENARIO = parse_scenario(tiny_scenario(["loop", "dense"]))
FINGERPRINTS = {"settings_fingerprint": "s1", "environment_fingerprint": "e1"}


def record(case, status="ok", **overrides):
    result = CaseResult(scenario="faults", case=case, mode="inference", status=status)
    if status == "ok":
        result.measurement = Measurement((0.001, 0.003, 0.002), "max_repeats")
        result.flops, result.peak_mem_bytes = 1024, 2048
    return {**result.to_json(), **FINGERPRINTS, **overrides}


def test_record_round_trip():
    case = expand(SCENARIO)[0]
    result = CaseResult(scenario="faults", case=case, mode="inference", flops=123_456_789_012_345, peak_mem_bytes=3)
    result.measurement = Measurement((0.001, 0.003, 0.002), "max_repeats")
    result.warnings.append("noisy: IQR is 80% of the median")
    back = CaseResult.from_json(json.loads(json.dumps(result.to_json())))
    assert back.case == case
    assert back.flops == 123_456_789_012_345
    assert back.peak_mem_bytes == 3
    assert back.latency_s == 0.002  # median of 1, 2 and 3 ms
    assert back.warnings == ["noisy: IQR is 80% of the median"]
    assert back.to_row() == result.to_row()


def test_plan_keeps_finished_and_runs_the_rest():
    loop, dense = expand(SCENARIO)
    plan = plan_resume([record(loop)], [loop, dense], SCENARIO, FINGERPRINTS, retry_failed=False)
    assert [result.case for result in plan.finished] == [loop]
    assert plan.to_run == [dense]
    assert plan.superseded == []


def test_plan_keeps_failed_cases_without_retry():
    loop, dense = expand(SCENARIO)
    records = [record(loop, status="failed"), record(dense, status="timeout")]
    plan = plan_resume(records, [loop, dense], SCENARIO, FINGERPRINTS, retry_failed=False)
    assert plan.to_run == []
    assert len(plan.kept_records) == 2


def test_plan_retries_failed_cases():
    loop, dense = expand(SCENARIO)
    records = [record(loop, status="oom"), record(dense)]
    plan = plan_resume(records, [loop, dense], SCENARIO, FINGERPRINTS, retry_failed=True)
    assert plan.to_run == [loop]
    assert plan.reasons == Counter({"failed, run again": 1})
    assert plan.kept_records == [records[1]]


def test_plan_supersedes_other_environment_settings_and_cases():
    loop, dense = expand(SCENARIO)
    other = parse_scenario(tiny_scenario(["loop", "dense"]).replace("num_experts: 2", "num_experts: 3"))
    records = [
        record(loop, environment_fingerprint="e0"),
        record(dense, settings_fingerprint="s0"),
        record(expand(other)[0]),
    ]
    plan = plan_resume(records, [loop, dense], SCENARIO, FINGERPRINTS, retry_failed=False)
    assert plan.to_run == [loop, dense]
    assert plan.reasons == Counter(
        {"measured in another environment": 1, "measured with other settings": 1, "case not in this sweep": 1}
    )


def test_plan_keeps_one_record_per_case():
    loop, _ = expand(SCENARIO)
    records = [record(loop, status="failed"), record(loop)]
    plan = plan_resume(records, [loop], SCENARIO, FINGERPRINTS, retry_failed=False)
    assert plan.kept_records == [records[1]]
    assert plan.superseded == [records[0]]


def test_plan_rejects_another_scenario():
    loop, _ = expand(SCENARIO)
    with pytest.raises(MeobenchError, match="contains cases of scenario 'other', not 'faults'"):
        plan_resume([record(loop, scenario="other")], [loop], SCENARIO, FINGERPRINTS, retry_failed=False)


def test_fingerprints_ignore_volatile_fields():
    environment = {"torch_version": "2.13.0", "cpu_model": "x", "timestamp_utc": "2026-01-01T00:00:00+00:00"}
    later = {**environment, "timestamp_utc": "2026-01-02T00:00:00+00:00"}
    assert environment_fingerprint(environment) == environment_fingerprint(later)
    assert environment_fingerprint(environment) != environment_fingerprint({**environment, "torch_version": "2.4"})
    longer_limit = parse_scenario(tiny_scenario(["loop", "dense"], time_limit_s=5))
    more_repeats = parse_scenario(tiny_scenario(["loop", "dense"], max_repeats=9))
    assert settings_fingerprint(SCENARIO) == settings_fingerprint(longer_limit)
    assert settings_fingerprint(SCENARIO) != settings_fingerprint(more_repeats)


def test_partial_last_line_is_dropped(tmp_path):
    loop, dense = expand(SCENARIO)
    run_dir = RunDirectory.create(tmp_path / "run")
    run_dir.append(CaseResult.from_json(record(loop)), **FINGERPRINTS)
    # A run killed while writing leaves the start of a record without its newline.
    with run_dir.jsonl_path.open("a") as handle:
        handle.write('{"scenario": "faults", "case_id": "moe-tok')
    records = run_dir.read_records()
    assert [r["case_id"] for r in records] == [loop.case_id]
    run_dir.append(CaseResult.from_json(record(dense)), **FINGERPRINTS)
    lines = run_dir.jsonl_path.read_text().splitlines()
    assert [json.loads(line)["case_id"] for line in lines] == [loop.case_id, dense.case_id]


def test_create_accepts_new_and_empty_directories(tmp_path):
    assert RunDirectory.create(tmp_path / "a" / "b").path.is_dir()
    (tmp_path / "empty").mkdir()
    RunDirectory.create(tmp_path / "empty")


def test_create_rejects_an_existing_run(tmp_path):
    (tmp_path / "results.jsonl").write_text("")
    with pytest.raises(MeobenchError, match="already contains a meobench run; continue it with --resume"):
        RunDirectory.create(tmp_path)


def test_reopen_rejects_other_directories(tmp_path):
    with pytest.raises(MeobenchError, match="--resume .*: not a meobench run directory"):
        RunDirectory.reopen(tmp_path)
    with pytest.raises(MeobenchError, match="--resume .*: no such directory"):
        RunDirectory.reopen(tmp_path / "missing")


def rows_of(out):
    return list(csv.DictReader((out / "results.csv").open()))


@pytest.mark.usefixtures("faults")
def test_resume_retries_failed_cases(tmp_path, monkeypatch):
    scenario = tmp_path / "faults.yaml"
    scenario.write_text(tiny_scenario(["loop", "fault-raise", "dense"]))
    out = tmp_path / "out"
    first = runner.invoke(app, ["run", str(scenario), "--out", str(out)])
    assert first.exit_code == 1, first.output
    assert [row["status"] for row in rows_of(out)] == ["ok", "failed", "ok"]

    # Without --retry-failed, nothing is left to run and the failure stays.
    again = runner.invoke(app, ["run", str(scenario), "--resume", str(out)])
    assert again.exit_code == 1, again.output
    assert "3 cases finished, 0 to run" in again.output

    # The strategy is fixed; --retry-failed runs that case again and replaces its record.
    monkeypatch.setitem(MOE_STRATEGIES, "fault-raise", run_loop)
    retried = runner.invoke(app, ["run", str(scenario), "--resume", str(out), "--retry-failed"])
    assert retried.exit_code == 0, retried.output
    assert "2 cases finished, 1 to run" in retried.output
    assert [row["status"] for row in rows_of(out)] == ["ok", "ok", "ok"]
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(r["strategy"] for r in records) == ["dense", "fault-raise", "loop"]
    superseded = (out / "results.superseded.jsonl").read_text().splitlines()
    assert [json.loads(line)["status"] for line in superseded] == ["failed"]
    assert json.loads((out / "results.json").read_text())["complete"] is True


def test_resumed_rows_keep_their_values(tmp_path):
    """A kept case's CSV row after --resume equals its row before, FLOP and profile columns included."""
    scenario = tmp_path / "inference.yaml"
    scenario.write_text(tiny_scenario(["loop", "dense"]).replace("mode: train\n", ""))
    out = tmp_path / "out"
    first = runner.invoke(app, ["run", str(scenario), "--out", str(out)])
    assert first.exit_code == 0, first.output
    before = rows_of(out)
    # Keep only the first record, as if the run had been killed after one case.
    lines = (out / "results.jsonl").read_text().splitlines()
    (out / "results.jsonl").write_text(lines[0] + "\n")

    resumed = runner.invoke(app, ["run", str(scenario), "--resume", str(out)])
    assert resumed.exit_code == 0, resumed.output
    assert "1 cases finished, 1 to run" in resumed.output
    after = rows_of(out)
    assert [row["case_id"] for row in after] == [row["case_id"] for row in before]
    assert before[0]["gflops_analytic"] != ""
    changing = {"speedup_vs_moe"}  # recomputed from the second case's new latency
    assert {k: v for k, v in after[0].items() if k not in changing} == {
        k: v for k, v in before[0].items() if k not in changing
    }
