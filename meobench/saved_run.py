"""A finished run read back from its directory: the results frame and what the run recorded about itself.

Plots, the HTML report and the Markdown report are all built from this one frame,
which is results.csv read back, so no view can disagree with the CSV.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from meobench.errors import MeobenchError

logger = logging.getLogger(__name__)


@dataclass
class SavedRun:
    """One run directory's results and metadata."""

    path: Path
    frame: pd.DataFrame
    """One row per case, the columns of results.csv (or of results.jsonl when the CSV is missing)."""
    scenario: dict[str, Any] = field(default_factory=dict)
    """The scenario with defaults filled in, from results.json; empty when that file is missing."""
    environment: dict[str, Any] = field(default_factory=dict)
    """Software and hardware of the run, from results.json; empty when that file is missing."""
    complete: bool | None = None
    """False when the sweep was interrupted; None when results.json is missing."""

    @property
    def scenario_name(self) -> str:
        if self.scenario.get("name"):
            return str(self.scenario["name"])
        names = self.frame["scenario"].dropna().unique() if "scenario" in self.frame else []
        return ", ".join(str(name) for name in names) or self.path.name

    @property
    def device_label(self) -> str:
        """Devices of the measured rows, each with its hardware name, for example ``cpu (AMD EPYC)``."""
        frame = self.frame
        if "device" not in frame:
            return "device unknown"
        labels = []
        for device, rows in frame.groupby("device", sort=True):
            names = rows["device_name"].dropna().unique() if "device_name" in rows else []
            labels.append(f"{device} ({', '.join(map(str, names))})" if len(names) else str(device))
        return ", ".join(labels) or "device unknown"

    @property
    def date(self) -> str:
        """UTC date and time the run started, or ``date unknown`` without results.json."""
        stamp = self.environment.get("timestamp_utc")
        if not stamp:
            return "date unknown"
        return str(stamp).replace("T", " ").replace("+00:00", " UTC")

    @property
    def caption(self) -> str:
        """Scenario, device and date: the line every figure and report carries."""
        return f"{self.scenario_name} · {self.device_label} · {self.date}"


def load_run(path: Path) -> SavedRun:
    """Read a run directory written by ``meobench run``.

    The frame comes from results.csv; when the sweep died before writing it, from
    results.jsonl, which contains every case finished until then.
    """
    path = Path(path)
    if not path.is_dir():
        raise MeobenchError(f"run directory not found: {path}; pass the folder that `meobench run --out` wrote.")
    csv_path, jsonl_path, json_path = path / "results.csv", path / "results.jsonl", path / "results.json"
    if csv_path.is_file():
        frame = pd.read_csv(csv_path, keep_default_na=True)
    elif jsonl_path.is_file():
        logger.warning("%s is missing; reading the finished cases from %s", csv_path, jsonl_path)
        frame = pd.read_json(jsonl_path, lines=True).drop(columns=["latency_samples_s"], errors="ignore")
    else:
        raise MeobenchError(
            f"{path} contains neither results.csv nor results.jsonl; pass the folder that `meobench run --out` wrote."
        )
    if "status" not in frame:
        raise MeobenchError(f"{path}: the results have no status column, so they were not written by meobench run.")
    # An all-empty error column reads back as float NaN; the reports show it as text.
    frame["error"] = frame["error"].astype(object).fillna("") if "error" in frame else ""

    run = SavedRun(path=path, frame=frame)
    if json_path.is_file():
        try:
            document = json.loads(json_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise MeobenchError(f"{json_path} is not valid JSON ({error}); rerun the scenario to rewrite it.") from None
        run.scenario = document.get("scenario") or {}
        run.environment = document.get("environment") or {}
        run.complete = document.get("complete")
    return run
