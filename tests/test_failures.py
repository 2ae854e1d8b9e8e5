"""Failures stay in their case: statuses, the time limit, out-of-memory handling and the end-of-run summary."""

import csv
import json
import signal
import time

import pytest
import torch
from typer.testing import CliRunner

from meobench.cli import app
from meobench.failures import CaseTimeout, classify_failure, free_device_memory, is_out_of_memory, time_limit
from meobench.isolation import IsolatedRunner, isolate_by_default
from meobench.cases import expand
from meobench.scenario import parse_scenario
from tests.faults import child_entry, faults, tiny_scenario  # noqa: F401 - faults is a fixture

runner = CliRunner()


def run_cli(tmp_path, text, *options):
    scenario = tmp_path / "faults.yaml"
    scenario.write_text(text)
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", str(scenario), "--out", str(out), *options])
    rows = list(csv.DictReader((out / "results.csv").open())) if (out / "results.csv").exists() else []
    return result, {row["strategy"]: row for row in rows}


def test_classify_cuda_out_of_memory():
    failure = classify_failure(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), "cpu")
    assert failure.status == "oom"
    assert failure.error == "OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"
    assert failure.free_mem_bytes is None  # only read on CUDA devices


@pytest.mark.parametrize(
    "error",
    [
        MemoryError(),
        RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"),
        RuntimeError("MPS backend out of memory (MPS allocated: 1 GB)"),
        RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling cublasCreate(handle)"),
    ],
    ids=["MemoryError", "cpu", "mps", "cublas"],
)
def test_allocation_failures_are_oom(error):
    assert is_out_of_memory(error)


def test_other_errors_are_failed():
    failure = classify_failure(ValueError("shape mismatch:\n  [2, 3] vs [3, 2]"), "cpu")
    assert failure.status == "failed"
    assert failure.error == "ValueError: shape mismatch: [2, 3] vs [3, 2]"
    assert not is_out_of_memory(RuntimeError("index out of range"))


def test_timeout_status():
    assert classify_failure(CaseTimeout("case timed out"), "cpu").status == "timeout"


def test_free_memory_only_on_cuda():
    assert free_device_memory("cpu") is None


def test_time_limit_interrupts_sleep():
    start = time.perf_counter()
    with pytest.raises(CaseTimeout, match="timed out after 0.2 s"):
        with time_limit(0.2):
            time.sleep(30)
    assert time.perf_counter() - start < 20
    # The limit is disarmed once the block is left.
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_time_limit_none_and_fast_block():
    with time_limit(None):
        pass
    with time_limit(30):
        value = 1 + 1
    assert value == 2
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_isolation_default_per_device():
    assert isolate_by_default(["cuda:0", "cpu"])
    assert not isolate_by_default(["cpu"])
    assert not isolate_by_default(["mps"])


@pytest.mark.usefixtures("faults")
def test_raising_and_nan_cases_are_marked(tmp_path):
    result, rows = run_cli(tmp_path, tiny_scenario(["loop", "fault-raise", "fault-nan"]))
    assert result.exit_code == 1, result.output
    assert rows["loop"]["status"] == "ok"
    assert rows["fault-raise"]["status"] == "failed"
    # The error is kept on one line.
    assert rows["fault-raise"]["error"] == "RuntimeError: injected failure second line"
    assert rows["fault-nan"]["status"] == "nan"
    assert rows["fault-nan"]["error"] == "output contains NaN or Inf"
    assert "2 of 3 cases did not finish (1 failed, 1 nan)" in result.output
    assert "--retry-failed" in result.output


@pytest.mark.usefixtures("faults")
def test_allow_failures_exits_0(tmp_path):
    result, rows = run_cli(tmp_path, tiny_scenario(["loop", "fault-raise"]), "--allow-failures")
    assert result.exit_code == 0, result.output
    assert rows["fault-raise"]["status"] == "failed"


@pytest.mark.usefixtures("faults")
def test_oom_case_is_marked_and_sweep_goes_on(tmp_path):
    result, rows = run_cli(tmp_path, tiny_scenario(["fault-oom", "loop"]))
    assert result.exit_code == 1, result.output
    assert rows["fault-oom"]["status"] == "oom"
    assert "CUDA out of memory" in rows["fault-oom"]["error"]
    # Free memory is read only on CUDA devices, so it stays empty on the CPU.
    assert rows["fault-oom"]["free_mem_mib"] == ""
    assert rows["loop"]["status"] == "ok"


@pytest.mark.usefixtures("faults")
def test_case_over_time_limit_times_out(tmp_path):
    result, rows = run_cli(tmp_path, tiny_scenario(["fault-sleep", "fault-raise"]), "--time-limit", "2")
    assert result.exit_code == 1, result.output
    assert rows["fault-sleep"]["status"] == "timeout"
    assert rows["fault-sleep"]["error"] == ("case timed out after 2 s (limit measure.time_limit_s or --time-limit)")
    # The sweep went on to the next case.
    assert rows["fault-raise"]["status"] == "failed"


@pytest.mark.usefixtures("faults")
def test_time_limit_from_scenario(tmp_path):
    result, rows = run_cli(tmp_path, tiny_scenario(["fault-sleep"], time_limit_s=1.5))
    assert result.exit_code == 1, result.output
    assert rows["fault-sleep"]["status"] == "timeout"
    document = json.loads((tmp_path / "out" / "results.json").read_text())
    assert document["scenario"]["measure"]["time_limit_s"] == 1.5


@pytest.mark.slow
@pytest.mark.usefixtures("faults")
def test_isolated_crash_stays_in_its_case():
    scenario = parse_scenario(tiny_scenario(["fault-crash", "fault-raise", "loop"], time_limit_s="null"))
    results = list(IsolatedRunner(scenario, child_entry=child_entry).iterate(expand(scenario)))
    by_strategy = {result.case.strategy: result for result in results}
    assert by_strategy["fault-crash"].status == "failed"
    assert by_strategy["fault-crash"].error == "child process died with SIGSEGV before sending a result"
    assert by_strategy["fault-raise"].status == "failed"
    assert by_strategy["fault-raise"].error == "RuntimeError: injected failure second line"
    assert by_strategy["loop"].status == "ok"
    assert by_strategy["loop"].latency_s > 0


@pytest.mark.slow
@pytest.mark.usefixtures("faults")
def test_isolated_hang_is_killed(monkeypatch):
    monkeypatch.setattr("meobench.isolation.KILL_GRACE_S", 0.5)
    scenario = parse_scenario(tiny_scenario(["fault-hang"], time_limit_s=2))
    [result] = IsolatedRunner(scenario, child_entry=child_entry).iterate(expand(scenario))
    assert result.status == "timeout"
    assert result.error == (
        "case timed out after 2 s (limit measure.time_limit_s or --time-limit); its child process was killed"
    )
