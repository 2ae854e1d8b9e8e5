"""Resuming a run: which cases of a run directory are finished, and which to run again.

A finished case is kept when its record matches the new run in three ways. The case
id matches (it encodes every case parameter). The settings fingerprint matches (mode,
seed, layer and measure options). The environment fingerprint matches (software
versions, hardware, threads, git commit). Every other record is superseded: moved out of results.jsonl so that
the run directory ends with exactly one record per case.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from meobench.cases import Case
from meobench.environment import device_identity
from meobench.errors import MeobenchError
from meobench.failures import FAILURE_STATUSES
from meobench.results import CaseResult
from meobench.scenario import Scenario, dump_scenario

# Environment fields that can change a measurement. Clocks, timestamps and paths are left out,
# so that a resumed run on the same machine and software matches.
ENVIRONMENT_KEYS = (
    "meobench_version",
    "git_commit",
    "python_version",
    "torch_version",
    "cuda_version",
    "cpu_model",
    "torch_threads",
    "cuda_devices",
)
# Measure options that do not change a finished measurement.
UNMEASURED_OPTIONS = ("time_limit_s",)


def environment_fingerprint(environment: dict[str, Any]) -> str:
    """Short hash of the environment fields in ENVIRONMENT_KEYS and the identity of each device used.

    A device's identity leaves out its state (clocks, driver), which varies from run to run.
    """
    identity = {key: environment.get(key) for key in ENVIRONMENT_KEYS}
    devices = environment.get("devices") or {}
    identity["devices"] = {device: device_identity(fingerprint) for device, fingerprint in sorted(devices.items())}
    return _digest(identity)


def settings_fingerprint(scenario: Scenario) -> str:
    """Short hash of the scenario settings that every case shares: mode, seed, layer and measure options."""
    data = dump_scenario(scenario)
    measure = {key: value for key, value in data["measure"].items() if key not in UNMEASURED_OPTIONS}
    return _digest({"mode": data["mode"], "seed": data["seed"], "layer": data["layer"], "measure": measure})


def _digest(data: dict[str, Any]) -> str:
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class ResumePlan:
    """The cases a resumed run keeps, runs and supersedes."""

    finished: list[CaseResult]
    """Results of the kept records, in record order."""
    kept_records: list[dict[str, Any]]
    """The records behind ``finished``, one per case."""
    to_run: list[Case]
    """Cases with no kept record, in sweep order."""
    superseded: list[dict[str, Any]] = field(default_factory=list)
    """Records taken out of results.jsonl."""
    reasons: Counter[str] = field(default_factory=Counter)
    """Superseded records by reason."""


def plan_resume(
    records: list[dict[str, Any]],
    cases: list[Case],
    scenario: Scenario,
    fingerprints: dict[str, str],
    retry_failed: bool,
) -> ResumePlan:
    """Split ``cases`` into finished and to run, given the records of an earlier run.

    ``fingerprints`` contains ``settings_fingerprint`` and ``environment_fingerprint`` of
    the new run. With ``retry_failed``, records with a failure status are superseded
    and their cases run again.
    """
    expected_ids = {case.case_id for case in cases}
    kept: dict[str, tuple[dict[str, Any], CaseResult]] = {}
    plan = ResumePlan(finished=[], kept_records=[], to_run=[])
    for record in records:
        if record.get("scenario") != scenario.name:
            raise MeobenchError(
                f"--resume: the run directory contains cases of scenario {record.get('scenario')!r}, "
                f"not {scenario.name!r}; give the scenario file of that run, or use --out for a new run."
            )
        reason = _supersede_reason(record, expected_ids, fingerprints, retry_failed)
        result = None
        if reason is None:
            try:
                result = CaseResult.from_json(record)
            except (KeyError, TypeError, ValueError):
                reason = "unreadable record"
        if reason is not None:
            plan.superseded.append(record)
            plan.reasons[reason] += 1
            continue
        previous = kept.pop(record["case_id"], None)
        if previous is not None:
            # An earlier version of meobench could append a case twice; the later record wins.
            plan.superseded.append(previous[0])
            plan.reasons["duplicate record"] += 1
        kept[record["case_id"]] = (record, result)

    plan.kept_records = [record for record, _ in kept.values()]
    plan.finished = [result for _, result in kept.values()]
    plan.to_run = [case for case in cases if case.case_id not in kept]
    return plan


def _supersede_reason(
    record: dict[str, Any], expected_ids: set[str], fingerprints: dict[str, str], retry_failed: bool
) -> str | None:
    if record.get("case_id") not in expected_ids:
        return "case not in this sweep"
    if record.get("environment_fingerprint") != fingerprints["environment_fingerprint"]:
        return "measured in another environment"
    if record.get("settings_fingerprint") != fingerprints["settings_fingerprint"]:
        return "measured with other settings"
    if retry_failed and record.get("status") in FAILURE_STATUSES:
        return "failed, run again"
    return None
