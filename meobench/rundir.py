"""The run directory: results.jsonl written as cases finish, results.csv and results.json at the end."""

from __future__ import annotations

import datetime
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from meobench.report import results_frame
from meobench.results import CaseResult

# Version of the results.json layout; raise it when a field changes meaning, and teach
# meobench.runs to read the old one. Version 2: environment.devices maps each device to
# a fingerprint dict (version 1: to its name), and each case carries integer ``flops``.
SCHEMA_VERSION = 2


def default_run_dir(scenario_name: str, root: Path = Path("reports")) -> Path:
    """``reports/<scenario name>/<UTC timestamp>/``."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return root / scenario_name / stamp


class RunDirectory:
    """Writes one run's files; each finished case is appended to results.jsonl at once."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.jsonl_path = self.path / "results.jsonl"
        self.csv_path = self.path / "results.csv"
        self.json_path = self.path / "results.json"

    def append(self, result: CaseResult) -> None:
        """Record a finished case so that an interrupted run keeps it."""
        with self.jsonl_path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(result.to_json(), default=_json_default) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def write_final(
        self, results: list[CaseResult], scenario: dict[str, Any], environment: dict[str, Any], complete: bool
    ) -> None:
        """Write results.csv and results.json, each through a temporary file and a rename."""
        frame = results_frame(results)
        _write_atomic(self.csv_path, frame.to_csv(index=False))
        document = {
            "schema_version": SCHEMA_VERSION,
            "complete": complete,
            "scenario": scenario,
            "environment": environment,
            "cases": [result.to_json() for result in results],
        }
        _write_atomic(self.json_path, json.dumps(document, indent=2, default=_json_default) + "\n")


def _write_atomic(path: Path, text: str) -> None:
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _json_default(value: object) -> str:
    return str(value)
