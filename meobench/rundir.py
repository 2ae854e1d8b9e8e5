"""The run directory: results.jsonl written as cases finish, results.csv and results.json at the end."""

from __future__ import annotations

import datetime
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from meobench.errors import MeobenchError
from meobench.report import results_frame
from meobench.results import CaseResult

logger = logging.getLogger(__name__)

# Version of the results.json layout; raise it when a field changes meaning, and teach
# meobench.runs to read the old one. Version 2: environment.devices maps each device to
# a fingerprint dict (version 1: to its name), and each case carries integer ``flops``.
SCHEMA_VERSION = 2


def default_run_dir(scenario_name: str, root: Path = Path("reports")) -> Path:
    """``reports/<scenario name>/<UTC timestamp>/``."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return root / scenario_name / stamp


class RunDirectory:
    """Writes one run's files; each finished case is appended to results.jsonl at once.

    Open one with ``create`` for a new run or ``reopen`` to resume one: both check the
    folder before any case runs.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.jsonl_path = self.path / "results.jsonl"
        self.csv_path = self.path / "results.csv"
        self.json_path = self.path / "results.json"
        self.superseded_path = self.path / "results.superseded.jsonl"
        """Records that a resumed run replaced (failed cases run again, other settings or environment)."""

    @classmethod
    def create(cls, path: Path, option: str = "--out") -> RunDirectory:
        """Make a new run directory; ``path`` must not exist or be an empty, writable folder.

        ``option`` names the command-line option that gave ``path``, for the error messages.
        """
        run_dir = cls(path)
        if run_dir.path.exists() and not run_dir.path.is_dir():
            raise MeobenchError(f"{option} {path}: exists and is not a directory; choose another path.")
        if run_dir.path.is_dir() and any(run_dir.path.iterdir()):
            if run_dir.is_run_directory():
                raise MeobenchError(
                    f"{option} {path}: already contains a meobench run; continue it with --resume {path}, "
                    "or choose another path."
                )
            raise MeobenchError(
                f"{option} {path}: the directory is not empty and is not a meobench run directory "
                "(no results.jsonl or results.json); choose an empty or new directory."
            )
        try:
            run_dir.path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise MeobenchError(
                f"{option} {path}: cannot create the directory ({error}); choose another path."
            ) from None
        run_dir.check_writable(option)
        return run_dir

    @classmethod
    def reopen(cls, path: Path, option: str = "--resume") -> RunDirectory:
        """Open an existing meobench run directory to add cases to it."""
        run_dir = cls(path)
        if not run_dir.path.is_dir():
            raise MeobenchError(f"{option} {path}: no such directory; give the run directory of an earlier run.")
        if not run_dir.is_run_directory():
            raise MeobenchError(
                f"{option} {path}: not a meobench run directory (no results.jsonl or results.json); "
                "give the directory that an earlier meobench run wrote."
            )
        run_dir.check_writable(option)
        return run_dir

    def is_run_directory(self) -> bool:
        """Return whether the folder contains files that ``meobench run`` writes."""
        return self.jsonl_path.is_file() or self.json_path.is_file()

    def check_writable(self, option: str) -> None:
        """Raise MeobenchError unless a file can be created in the folder."""
        try:
            descriptor, probe = tempfile.mkstemp(dir=self.path, prefix=".meobench-write-check.")
        except OSError as error:
            raise MeobenchError(
                f"{option} {self.path}: the directory is not writable ({error.strerror or error}); "
                "fix its permissions or choose another path."
            ) from None
        os.close(descriptor)
        os.unlink(probe)

    def append(self, result: CaseResult, **extra: str) -> None:
        """Record a finished case so that an interrupted run keeps it; ``extra`` adds fields to its record."""
        record = {**result.to_json(), **extra}
        with self.jsonl_path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, default=_json_default) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def read_records(self) -> list[dict[str, Any]]:
        """Read results.jsonl; a line cut short by a killed run is dropped from the file.

        Only the last line can be cut short, because each record is written with one
        call and flushed before the next.
        """
        if not self.jsonl_path.is_file():
            return []
        data = self.jsonl_path.read_bytes()
        complete = data[: data.rfind(b"\n") + 1]
        if len(complete) < len(data):
            logger.warning(
                "%s: dropping an incomplete last line (%d bytes)", self.jsonl_path, len(data) - len(complete)
            )
            with self.jsonl_path.open("r+b") as handle:
                handle.truncate(len(complete))
        records = []
        for number, line in enumerate(complete.decode("utf-8", errors="replace").splitlines(), start=1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                logger.warning("%s:%d: skipping an unreadable record (%s)", self.jsonl_path, number, error)
                continue
            if isinstance(record, dict):
                records.append(record)
        return records

    def replace_records(self, records: list[dict[str, Any]], superseded: list[dict[str, Any]]) -> None:
        """Rewrite results.jsonl with ``records``, moving ``superseded`` to results.superseded.jsonl first."""
        if superseded:
            with self.superseded_path.open("a", encoding="utf-8") as handle:
                handle.writelines(json.dumps(record, default=_json_default) + "\n" for record in superseded)
        _write_atomic(self.jsonl_path, "".join(json.dumps(record, default=_json_default) + "\n" for record in records))

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
        # mkstemp creates the file readable by its owner only; give it the mode a plain open() would.
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _umask() -> int:
    """Return the process's umask; reading it means setting it, so it is set straight back."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _json_default(value: object) -> str:
    return str(value)
