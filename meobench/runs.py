"""Reading finished runs back: results.json of any supported schema version, upgraded to the current one.

A run is addressed by its run directory or its results.json file. A folder whose
subfolders are run directories of one scenario on one device is read as one run
whose latency samples are pooled: that is how interleaved rounds of a baseline
and a candidate are gated. Cases are identified by their parameters
(``CASE_KEY``), never by their position in the file.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from meobench.environment import device_identity
from meobench.errors import MeobenchError
from meobench.rundir import SCHEMA_VERSION
from meobench.scenario import Scenario, dump_scenario

# Case parameters that identify one case within a run.
CASE_KEY = (
    "variant", "strategy", "expert_kind", "num_experts", "top_k", "batch_size", "seq_len", "d_model", "d_ff",
    "dtype", "device", "mode", "model",
)  # fmt: skip
# Scenario keys that do not change what is measured, so runs that differ only there stay comparable.
NON_DEFINING_SCENARIO_KEYS = ("description", "measure", "gates")
# Defining keys added after runs were first recorded, with the value those runs used.
LATER_SCENARIO_KEYS = {"compile": False, "threads": None}


@dataclass(frozen=True)
class Run:
    """One run's results.json, upgraded to the current schema."""

    path: Path
    """The results.json file."""
    schema_version: int
    """Version the file was written with, before any upgrade."""
    complete: bool
    """False when the run was interrupted before every case finished."""
    scenario: dict[str, Any]
    environment: dict[str, Any]
    cases: list[dict[str, Any]]
    """One record per case: the results.csv columns, ``flops`` and ``latency_samples_s``."""
    rounds: int = 1
    """Runs pooled into this one; ``path`` is then their parent folder."""

    @property
    def label(self) -> str:
        """The run directory's name (a UTC timestamp by default)."""
        return self.path.name if self.rounds > 1 else self.path.parent.name

    @property
    def devices(self) -> dict[str, dict[str, Any]]:
        """Device fingerprint of each device the run used, by device string (cpu, cuda:0)."""
        return self.environment.get("devices") or {}

    def cases_by_key(self, keys: tuple[str, ...] = CASE_KEY) -> dict[tuple[Any, ...], dict[str, Any]]:
        """Case records by their ``keys`` values; a key that occurs twice raises, since joins would be ambiguous."""
        cases: dict[tuple[Any, ...], dict[str, Any]] = {}
        for case in self.cases:
            key = case_key(case, keys)
            if key in cases:
                raise MeobenchError(
                    f"{self.path}: case {case.get('case_id')} occurs twice; the file is damaged, so rerun the scenario."
                )
            cases[key] = case
        return cases


def case_key(case: dict[str, Any], keys: tuple[str, ...] = CASE_KEY) -> tuple[Any, ...]:
    return tuple(case.get(name) for name in keys)


def defining_scenario(scenario: dict[str, Any]) -> dict[str, Any]:
    """Drop the scenario keys that do not change what is measured, and fill in keys older runs lack.

    Keys added to the schema after a run was recorded (such as sweep.model) take
    their defaults first, so that run stays comparable with later ones.
    """
    defaults = dump_scenario(Scenario(name="defaults", variants=["dense"]))
    scenario = _with_defaults(scenario, defaults)
    defining = {key: value for key, value in scenario.items() if key not in NON_DEFINING_SCENARIO_KEYS}
    for key, value in LATER_SCENARIO_KEYS.items():
        defining.setdefault(key, value)
    return defining


def _with_defaults(recorded: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """Add the keys of ``defaults`` that ``recorded`` lacks, section by section."""
    filled = dict(recorded)
    for key, default in defaults.items():
        if key not in filled:
            filled[key] = default
        elif isinstance(default, dict) and isinstance(filled[key], dict):
            filled[key] = _with_defaults(filled[key], default)
    return filled


def results_path(path: str | Path) -> Path:
    """Resolve a run directory or a results.json path to the results.json file."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    if not path.is_file():
        raise MeobenchError(
            f"{path}: results.json not found; pass a run directory written by 'meobench run' or its results.json."
        )
    return path


def load_run(path: str | Path) -> Run:
    """Read a run directory, a results.json, or a folder of run directories to pool.

    A file from a newer meobench, or from before schema versions existed, raises
    MeobenchError naming the version it has and what to do.
    """
    path = Path(path)
    if path.is_dir() and not (path / "results.json").exists():
        members = sorted(path.glob("*/results.json"))
        if members:
            return pool_runs(path, [load_results(member) for member in members])
    return load_results(path)


def load_results(path: str | Path) -> Run:
    """Read one run directory or results.json, upgrading an older schema version."""
    path = results_path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise MeobenchError(f"{path}: cannot read the file ({error}).") from None
    except json.JSONDecodeError as error:
        raise MeobenchError(f"{path}: invalid JSON at line {error.lineno}: {error.msg}.") from None
    if not isinstance(document, dict) or "cases" not in document:
        raise MeobenchError(f"{path}: not a meobench results.json (no 'cases' list).")

    version = document.get("schema_version")
    if not isinstance(version, int):
        raise MeobenchError(
            f"{path}: schema_version is missing or not an integer ({version!r}); "
            f"this reader supports versions 1 to {SCHEMA_VERSION}. Rerun the scenario with this meobench."
        )
    if version > SCHEMA_VERSION:
        raise MeobenchError(
            f"{path}: schema_version {version} is newer than this meobench reads ({SCHEMA_VERSION}); "
            "upgrade meobench to read it."
        )
    if version not in UPGRADES and version != SCHEMA_VERSION:
        raise MeobenchError(
            f"{path}: schema_version {version} is no longer supported (oldest supported: {min(UPGRADES)}); "
            "rerun the scenario with this meobench."
        )
    upgraded = document
    for step in range(version, SCHEMA_VERSION):
        upgraded = UPGRADES[step](upgraded)
    return Run(
        path=path,
        schema_version=version,
        complete=bool(upgraded.get("complete", True)),
        scenario=upgraded.get("scenario") or {},
        environment=upgraded.get("environment") or {},
        cases=list(upgraded["cases"]),
    )


def pool_runs(folder: Path, runs: list[Run]) -> Run:
    """Join rounds of one scenario on one device into one run: each case's samples concatenated in order.

    Raises MeobenchError when the rounds measured different scenarios, used different
    hardware, or disagree on a case's FLOPs or parameters.
    """
    first = runs[0]
    for other in runs[1:]:
        if defining_scenario(other.scenario) != defining_scenario(first.scenario):
            raise MeobenchError(
                f"{folder}: {other.path} ran another scenario than {first.path}; pool rounds of one scenario."
            )
        identities = [{device: device_identity(fp) for device, fp in run.devices.items()} for run in (first, other)]
        if identities[0] != identities[1]:
            raise MeobenchError(
                f"{folder}: {other.path} ran on other hardware than {first.path}; pool rounds of one device."
            )

    pooled: dict[tuple[Any, ...], dict[str, Any]] = {}
    for run in runs:
        for key, case in run.cases_by_key().items():
            if key not in pooled:
                pooled[key] = {**case, "latency_samples_s": list(case.get("latency_samples_s") or [])}
                continue
            merged = pooled[key]
            for metric in ("flops", "params", "active_params"):
                if case.get(metric) != merged.get(metric):
                    raise MeobenchError(
                        f"{folder}: case {case.get('case_id')} has {metric} {merged.get(metric)} in one round and "
                        f"{case.get(metric)} in {run.path}; rounds must run the same code."
                    )
            if case.get("status") != "ok" and merged.get("status") == "ok":
                merged.update(status=case.get("status"), error=case.get("error"))
            merged["latency_samples_s"] += case.get("latency_samples_s") or []
    for case in pooled.values():
        samples = case["latency_samples_s"]
        case["repeats"] = len(samples)
        case["latency_ms_median"] = statistics.median(samples) * 1e3 if samples else None
    return replace(
        first, path=folder, complete=all(run.complete for run in runs), cases=list(pooled.values()), rounds=len(runs)
    )


def _upgrade_1_to_2(document: dict[str, Any]) -> dict[str, Any]:
    """Version 1 stored device names, not fingerprints, and FLOPs only as gflops."""
    environment = dict(document.get("environment") or {})
    environment["devices"] = {device: {"name": name} for device, name in (environment.get("devices") or {}).items()}
    cases = []
    for case in document["cases"]:
        case = dict(case)
        if case.get("flops") is None and case.get("gflops") is not None:
            # gflops was written as flops / 1e9, which rounds back to the exact integer below 2**53 FLOPs.
            case["flops"] = round(case["gflops"] * 1e9)
        cases.append(case)
    return {**document, "environment": environment, "cases": cases, "schema_version": 2}


# Upgrade from version N to N + 1, by N.
UPGRADES: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _upgrade_1_to_2}
