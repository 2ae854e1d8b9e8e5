"""Results in other tools' formats: pytest-benchmark's JSON, so its dashboards ingest meobench runs."""

from __future__ import annotations

import datetime
import platform
from typing import Any

from meobench.errors import MeobenchError
from meobench.runs import CASE_KEY, Run

# pytest-benchmark's JSON layout as of version 5 (pytest_benchmark/plugin.py, stats.py).
PYTEST_BENCHMARK_FORMAT = "pytest-benchmark"


def pytest_benchmark_document(run: Run) -> dict[str, Any]:
    """Build one pytest-benchmark entry per measured case, with its statistics computed by pytest-benchmark itself.

    Each timed call is one round of one iteration, so ``stats.data`` contains the raw
    samples in seconds. Case parameters go to ``params`` and the other metrics to ``extra_info``.
    """
    try:
        import pytest_benchmark
        from pytest_benchmark.stats import Stats
    except ImportError:
        raise MeobenchError(
            "export --format pytest-benchmark needs the pytest-benchmark package; install it with "
            "pip install pytest-benchmark."
        ) from None

    environment = run.environment
    benchmarks = []
    for case in run.cases:
        samples = case.get("latency_samples_s") or []
        if case.get("status") != "ok" or not samples:
            continue
        stats = Stats()
        for sample in samples:
            stats.update(sample)
        params = {name: case.get(name) for name in CASE_KEY}
        benchmarks.append(
            {
                "group": run.scenario.get("name"),
                "name": case["case_id"],
                "fullname": f"meobench::{run.scenario.get('name')}::{case['case_id']}",
                "params": params,
                "param": case["case_id"],
                "extra_info": {
                    key: case.get(key)
                    for key in ("flops", "params", "active_params", "peak_mem_mib", "fidelity_rel_err", "pct_of_peak")
                },
                "options": {"timer": _timer(environment, case.get("device")), "min_rounds": len(samples)},
                "stats": {**stats.as_dict(), "data": list(samples), "iterations": 1},
            }
        )
    return {
        "machine_info": {
            "node": platform.node(),
            "processor": environment.get("cpu_model"),
            "machine": platform.machine(),
            "python_version": environment.get("python_version"),
            "system": environment.get("os") or environment.get("platform"),
            "devices": run.devices,
            "torch_version": environment.get("torch_version"),
        },
        "commit_info": {
            "id": environment.get("git_commit"),
            "dirty": environment.get("git_dirty"),
            "project": "meobench",
        },
        "benchmarks": benchmarks,
        "datetime": environment.get("timestamp_utc") or datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "version": pytest_benchmark.__version__,
    }


def _timer(environment: dict[str, Any], device: str | None) -> str:
    return (environment.get("timing") or {}).get("timer", {}).get(device or "", "time.perf_counter")
