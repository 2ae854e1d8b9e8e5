"""Small result frames with values chosen so that every plotted point can be worked out by hand."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pandas as pd

from meobench.results import COLUMNS
from meobench.saved_run import SavedRun

ENVIRONMENT = {"timestamp_utc": "2026-01-02T03:04:05+00:00", "torch_version": "2.13.0+cpu"}
SCENARIO = {"name": "synthetic", "description": "Hand-made results for the report tests."}
FAILED_ERROR = "RuntimeError: deliberate failure"


def synthetic_frame() -> pd.DataFrame:
    """dense, moe-sequence and meo-sequence on n in (4, 8), k in (1, 2, 4), batch in (1, 8); seq_len 16.

    Per case, with k the top-k and b the batch size:
    latency (ms): dense 1*b, moe 2*k*b, meo 3*b, so MEO's speedup over MoE is 2*k*b / (3*b) = 2k/3;
    GFLOP: dense 0.1*b, moe 0.1*k*b, meo 0.2*b; peak memory (MiB): dense 1*b, moe 2*b, meo 3*b.
    One more case is skipped and one failed, so neither may appear in a plot.
    """
    rows = []
    for num_experts, top_k, batch in itertools.product((4, 8), (1, 2, 4), (1, 8)):
        moe_latency = 2.0 * top_k * batch
        for variant, strategy, latency, gflops, memory in (
            ("dense", "none", 1.0 * batch, 0.1 * batch, 1.0 * batch),
            ("moe-sequence", "loop", moe_latency, 0.1 * top_k * batch, 2.0 * batch),
            ("meo-sequence", "gemm", 3.0 * batch, 0.2 * batch, 3.0 * batch),
        ):
            speedup = None if variant == "dense" else moe_latency / latency
            rows.append(_row(variant, strategy, num_experts, top_k, batch, latency, gflops, memory, speedup))
    rows.append(_row("moe-sequence", "loop", 4, 8, 1, None, None, None, None, status="skipped",
                     error="top_k=8 is larger than num_experts=4"))  # fmt: skip
    rows.append(_row("meo-sequence", "gather", 8, 2, 8, None, None, None, None, status="failed", error=FAILED_ERROR))
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _row(variant, strategy, num_experts, top_k, batch, latency, gflops, memory, speedup, status="ok", error=""):
    return {
        "scenario": "synthetic",
        "case_id": f"{variant}.{strategy}.n{num_experts}-k{top_k}-b{batch}",
        "variant": variant,
        "strategy": strategy,
        "expert_kind": "linear",
        "num_experts": num_experts,
        "top_k": top_k,
        "batch_size": batch,
        "seq_len": 16,
        "d_model": 32,
        "d_ff": 64,
        "dtype": "float32",
        "device": "cpu",
        "mode": "inference",
        "gflops": gflops,
        "latency_ms_median": latency,
        "peak_mem_mib": memory,
        "speedup_vs_moe": speedup,
        "status": status,
        "error": error,
        "device_name": "Test CPU",
    }


def synthetic_run(frame: pd.DataFrame | None = None) -> SavedRun:
    """A SavedRun of ``frame`` (default: synthetic_frame()) that was never written to disk."""
    frame = synthetic_frame() if frame is None else frame
    return SavedRun(path=Path("synthetic"), frame=frame, scenario=dict(SCENARIO), environment=dict(ENVIRONMENT))


def write_run_directory(path: Path, frame: pd.DataFrame | None = None) -> Path:
    """Write results.csv and results.json as ``meobench run`` lays them out; return ``path``."""
    frame = synthetic_frame() if frame is None else frame
    path.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path / "results.csv", index=False)
    document = {"schema_version": 1, "complete": True, "scenario": SCENARIO, "environment": ENVIRONMENT, "cases": []}
    (path / "results.json").write_text(json.dumps(document))
    return path
