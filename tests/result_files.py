"""Synthetic results.json documents with chosen samples and metrics, for gate and compare tests."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Sequence

from meobench.rundir import SCHEMA_VERSION
from meobench.scenario import dump_scenario, parse_scenario

SCENARIO = dump_scenario(parse_scenario("name: synthetic\nvariants: [dense, moe-token]\nsweep: {device: cpu}\n"))
CPU = {"kind": "cpu", "name": "Test CPU 9000", "logical_cores": 2, "threads": 1}


def make_case(variant: str = "dense", samples_ms: Sequence[float] = (1, 2, 3, 4, 5), **fields: Any) -> dict[str, Any]:
    """One case record as ``meobench run`` writes it, with latency samples given in milliseconds."""
    case = {
        "case_id": f"{variant}.loop.n8-k2-b8-l128-d768-f3072-linear-float32-cpu",
        "variant": variant, "strategy": "none" if variant == "dense" else "loop", "expert_kind": "linear",
        "num_experts": 8, "top_k": 2, "batch_size": 8, "seq_len": 128, "d_model": 768, "d_ff": 3072,
        "dtype": "float32", "device": "cpu", "mode": "inference", "status": "ok", "error": "",
        "device_name": CPU["name"], "params": 2_362_368, "active_params": 2_362_368,
        "flops": 4_831_838_208, "gflops": 4.831838208,
        "latency_ms_median": sorted(samples_ms)[len(samples_ms) // 2], "peak_mem_mib": 12.0,
        "latency_samples_s": [value / 1e3 for value in samples_ms],
    }  # fmt: skip
    case.update(fields)
    return case


def make_document(cases: list[dict[str, Any]], device: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    document = {
        "schema_version": SCHEMA_VERSION,
        "complete": True,
        "scenario": copy.deepcopy(SCENARIO),
        "environment": {
            "torch_version": "2.13.0+cpu",
            "cuda_version": None,
            "cudnn_version": None,
            "triton_version": None,
            "python_version": "3.11.7",
            "devices": {"cpu": dict(device or CPU)},
        },  # fmt: skip
        "cases": cases,
    }
    document.update(fields)
    return document


def write_run(folder: Path, document: dict[str, Any]) -> Path:
    """Write ``document`` as ``folder/results.json`` and return the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(document))
    return folder
