"""Side-by-side comparison of runs, and the checks that decide whether two runs are comparable.

Runs are joined on their case parameters, never on row order. When every run used
a single device, the device string is left out of the join, so a ``cuda`` run on
one GPU lines up with a ``cuda`` run on another, or with a ``cpu`` run: that is
the GPU-generation view, where columns are labelled by device name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from meobench.environment import device_identity, stack_identity
from meobench.runs import CASE_KEY, Run, defining_scenario

# Metrics that can be shown side by side: column -> header with unit.
METRICS = {
    "gflops": "GFLOP",
    "params": "params",
    "latency_ms_median": "median (ms)",
    "tokens_per_s": "tokens/s",
    "peak_mem_mib": "peak (MiB)",
    "achieved_tflops": "TFLOP/s",
    "pct_of_peak": "% of peak",
    "fidelity_rel_err": "rel err",
}
DEFAULT_METRICS = ("gflops", "latency_ms_median", "peak_mem_mib")


@dataclass
class Comparability:
    """Reasons two runs cannot be compared, grouped by cause. Empty lists mean no problem."""

    scenario: list[str] = field(default_factory=list)
    """Differences in what was measured (variants, sweep, layer options, mode, seed)."""
    stack: list[str] = field(default_factory=list)
    """Differences in torch, CUDA, cuDNN, Triton or Python versions."""
    devices: list[str] = field(default_factory=list)
    """Differences in the hardware's identity (name, compute capability, SM count, memory, cores)."""
    incomplete: list[str] = field(default_factory=list)
    """Runs that were interrupted before every case finished."""
    notes: list[str] = field(default_factory=list)
    """Differences that do not block a comparison but may explain one (timing settings)."""


def check_comparable(reference: Run, other: Run) -> Comparability:
    """List every difference between two runs that makes their numbers incomparable."""
    result = Comparability()
    result.scenario = _dict_differences(defining_scenario(reference.scenario), defining_scenario(other.scenario))
    result.stack = _dict_differences(stack_identity(reference.environment), stack_identity(other.environment))
    result.devices = device_differences(reference, other)
    result.incomplete = [f"{run.path} is incomplete (interrupted)" for run in (reference, other) if not run.complete]
    measure = _dict_differences(reference.scenario.get("measure") or {}, other.scenario.get("measure") or {})
    result.notes = [f"timing settings differ: {difference}" for difference in measure]
    return result


def device_differences(reference: Run, other: Run) -> list[str]:
    """Compare the device fingerprints of the devices both runs name, and the case rows' device names.

    Only fields present in both fingerprints are compared, so a run read from an
    older schema, which recorded only names, is compared by name.
    """
    differences = []
    if sorted(reference.devices) != sorted(other.devices):
        differences.append(f"devices {sorted(reference.devices)} vs {sorted(other.devices)}")
    for device in sorted(set(reference.devices) & set(other.devices)):
        mine = device_identity(reference.devices[device])
        theirs = device_identity(other.devices[device])
        for key in sorted(set(mine) & set(theirs)):
            if mine[key] != theirs[key]:
                differences.append(f"{device} {key}: {mine[key]!r} vs {theirs[key]!r}")
    names = [sorted({case.get("device_name") or "" for case in run.cases} - {""}) for run in (reference, other)]
    if names[0] != names[1]:
        differences.append(f"case device names {names[0]} vs {names[1]}")
    return differences


def _dict_differences(reference: dict[str, Any], other: dict[str, Any], prefix: str = "") -> list[str]:
    """``key: old vs new`` for each leaf that differs, with dotted key paths."""
    differences = []
    for key in sorted(set(reference) | set(other)):
        mine, theirs = reference.get(key), other.get(key)
        if isinstance(mine, dict) and isinstance(theirs, dict):
            differences += _dict_differences(mine, theirs, f"{prefix}{key}.")
        elif mine != theirs:
            differences.append(f"{prefix}{key}: {mine!r} vs {theirs!r}")
    return differences


def run_labels(runs: list[Run]) -> list[str]:
    """Column labels: the device name when runs used different devices, else the run directory's name."""
    names = [_single_device_name(run) for run in runs]
    by_device = None not in names and len(set(names)) > 1
    labels = [str(name) if by_device else run.label for name, run in zip(names, runs)]
    if len(set(labels)) < len(labels):
        labels = [f"{label} #{index}" for index, label in enumerate(labels, start=1)]
    return labels


def _single_device_name(run: Run) -> str | None:
    if len(run.devices) != 1:
        return None
    return next(iter(run.devices.values())).get("name")


def join_keys(runs: list[Run]) -> list[str]:
    """Case parameters to join on: all of them, less ``device`` when every run used one device."""
    if all(len({case.get("device") for case in run.cases}) <= 1 for run in runs):
        return [name for name in CASE_KEY if name != "device"]
    return list(CASE_KEY)


def comparison_frame(runs: list[Run], metrics: tuple[str, ...] = DEFAULT_METRICS) -> pd.DataFrame:
    """Build one row per case with ``metric [label]`` per run and ``metric ratio [label]`` against the first run.

    The join is an outer join on ``join_keys``, so a case missing from a run shows as empty.
    """
    if not runs:
        raise ValueError("comparison_frame needs at least one run")
    keys = join_keys(runs)
    labels = run_labels(runs)
    frames = []
    for run, label in zip(runs, labels):
        frame = pd.DataFrame(run.cases)
        for column in (*keys, *metrics):
            if column not in frame:
                frame[column] = None
        frame = frame[[*keys, *metrics]].rename(columns={metric: f"{metric} [{label}]" for metric in metrics})
        frames.append(frame)
    # An outer merge sorts its keys, so the first run's row order is restored afterwards.
    joined = frames[0].assign(_order=range(len(frames[0])))
    for frame in frames[1:]:
        joined = joined.merge(frame, on=keys, how="outer", sort=False)
    joined = joined.sort_values("_order", na_position="last", kind="stable")

    for metric in metrics:
        first = pd.to_numeric(joined[f"{metric} [{labels[0]}]"], errors="coerce")
        for label in labels[1:]:
            other = pd.to_numeric(joined[f"{metric} [{label}]"], errors="coerce")
            joined[f"{metric} ratio [{label}]"] = other / first.where(first != 0)
    ordered = [*keys]
    for metric in metrics:
        ordered += [f"{metric} [{label}]" for label in labels]
        ordered += [f"{metric} ratio [{label}]" for label in labels[1:]]
    return joined[ordered].reset_index(drop=True)
