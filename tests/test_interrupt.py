"""Ctrl-C and kills: two-stage interruption, and a killed sweep resumed to a complete result set."""

import csv
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from meobench.cases import expand
from meobench.interrupts import StopRequest
from meobench.scenario import parse_scenario

ROOT = Path(__file__).resolve().parent.parent
# 3 expert counts = 3 groups of 7 cases (dense; moe-token and moe-sequence with loop and dense;
# meo-sequence with gather and gemm) = 21 cases. FLOP counting, the memory profile and 20 repeats
# keep each case at tens of milliseconds or more, so a signal sent after the second case lands mid-sweep.
KILL_SCENARIO = """\
name: killed
variants: [dense, moe-token, moe-sequence, meo-sequence]
sweep: {num_experts: [2, 4, 8], top_k: 1, batch_size: 2, seq_len: 8, d_model: 16, d_ff: 16,
        strategy: [loop, dense, gather, gemm], device: cpu}
measure: {warmup: 0, min_repeats: 20, max_repeats: 20, max_time_s: 10, target_rel_iqr: 0}
"""
TOTAL = 21


def test_first_sigint_requests_stop():
    calls = []
    # The handler in force before, which StopRequest restores: Python's default one in a foreground
    # shell, SIG_IGN when a shell starts the tests in the background.
    before = signal.getsignal(signal.SIGINT)
    with StopRequest(on_first=lambda: calls.append("stop")) as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested
        assert calls == ["stop"]
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before


def test_second_sigint_waits_for_protected_block():
    written = []
    with StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        with pytest.raises(KeyboardInterrupt):
            with stop.protected():
                os.kill(os.getpid(), signal.SIGINT)
                written.append("record")
    # The record was written before the interrupt was raised.
    assert written == ["record"]


def interrupt_run(tmp_path):
    """Start ``python -m meobench run`` on KILL_SCENARIO and send it SIGINT once it has finished two cases."""
    scenario = tmp_path / "killed.yaml"
    scenario.write_text(KILL_SCENARIO)
    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-m", "meobench", "run", str(scenario), "--out", str(out)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for_records(out / "results.jsonl", 2, process)
    process.send_signal(signal.SIGINT)
    return scenario, process, out


def wait_for_records(path, count, process, timeout_s=300):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().count("\n") >= count:
            return
        assert process.poll() is None, process.communicate()
        time.sleep(0.02)
    raise AssertionError(f"{path} did not reach {count} records in {timeout_s} s")


def run_meobench(tmp_path, *arguments):
    """Run ``python -m meobench`` with this checkout's code and wait for it."""
    return subprocess.run(
        [sys.executable, "-m", "meobench", *arguments],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
    )


def assert_complete(out):
    expected = {case.case_id for case in expand(parse_scenario(KILL_SCENARIO))}
    assert len(expected) == TOTAL
    ids = [json.loads(line)["case_id"] for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(ids) == TOTAL  # no duplicate ...
    assert set(ids) == expected  # ... and no missing case
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [row["case_id"] for row in rows] == [case.case_id for case in expand(parse_scenario(KILL_SCENARIO))]
    assert {row["status"] for row in rows} == {"ok"}
    assert json.loads((out / "results.json").read_text())["complete"] is True


@pytest.mark.slow
def test_killed_run_resumes_to_complete_set(tmp_path):
    scenario, process, out = interrupt_run(tmp_path)
    time.sleep(0.05)
    process.kill()
    process.communicate()
    finished = (out / "results.jsonl").read_text().count("\n")
    assert 2 <= finished < TOTAL

    resumed = run_meobench(tmp_path, "run", str(scenario), "--resume", str(out))
    assert resumed.returncode == 0, resumed.stderr
    assert f"{finished} cases finished, {TOTAL - finished} to run" in resumed.stdout
    assert_complete(out)


@pytest.mark.slow
def test_ctrl_c_prints_the_resume_command(tmp_path):
    _, process, out = interrupt_run(tmp_path)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, stderr
    assert "Stopping after the running case" in stderr
    finished = len(list(csv.DictReader((out / "results.csv").open())))
    assert 2 <= finished < TOTAL
    assert json.loads((out / "results.json").read_text())["complete"] is False

    command = stderr.split("Resume with:\n", 1)[1].splitlines()[0]
    arguments = shlex.split(command)
    assert arguments[:2] == ["meobench", "run"]
    resumed = run_meobench(tmp_path, *arguments[1:])
    assert resumed.returncode == 0, resumed.stderr
    assert_complete(out)
