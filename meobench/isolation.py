"""Case isolation: each case in a fresh child process, started with spawn, under a hard time limit.

A child that crashes, hangs in a kernel or poisons its CUDA context takes only its
own case with it: the parent records the case as ``failed`` or ``timeout`` and
starts a fresh child for the next one. The price is the child's start-up (importing
torch and meobench, creating the CUDA context, building the case's layers), paid
once per case.

Default per device (``isolate_by_default``): on CUDA, yes. An illegal memory access
or a device-side assert leaves the CUDA context unusable, so every later case of the
process would fail too, and an out-of-memory case leaves a fragmented cache behind.
On the CPU and MPS, no: exceptions stay in their case in process, the SIGALRM time
limit of meobench.failures covers Python-level hangs, and the start-up would cost
more than a small case's measurement.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from meobench.cases import Case, CaseGroup
from meobench.devices import unavailable_reason
from meobench.errors import ConfigError
from meobench.results import CaseResult
from meobench.runner import Runner
from meobench.scenario import Scenario, dump_scenario

logger = logging.getLogger(__name__)

# Seconds a child may take to import torch and meobench and report that it started.
CHILD_START_TIMEOUT_S = 300.0
# Seconds the parent waits past a case's time limit before it kills the child. The child's own
# SIGALRM limit normally ends the case first and keeps what it measured.
KILL_GRACE_S = 5.0
# First message of a child: imports done, the case starts.
STARTED = "started"

ChildEntry = Callable[[dict[str, Any], Case, Connection, dict[str, int], dict[str, Any]], None]


def isolate_by_default(devices: Iterable[str]) -> bool:
    """Decide whether cases on ``devices`` run in child processes when neither --isolate nor --no-isolate is given."""
    return any(device.startswith("cuda") for device in devices)


def run_case_in_child(
    scenario_data: dict[str, Any],
    case: Case,
    connection: Connection,
    log_levels: dict[str, int],
    runner_options: dict[str, Any],
) -> None:
    """Child process entry: run one case and send its CaseResult to the parent.

    ``runner_options`` are keyword arguments of Runner, such as ``trace_dir``.
    """
    # Ctrl-C reaches the whole process group; the parent decides whether the case stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=log_levels.get("", logging.WARNING), format="%(message)s")
    for name, level in log_levels.items():
        logging.getLogger(name).setLevel(level)

    scenario = Scenario.model_validate(scenario_data)
    connection.send(STARTED)
    result = next(iter(Runner(scenario, **runner_options).iterate([case])))
    connection.send(result)
    connection.close()


class IsolatedRunner:
    """Measures each case of one scenario in its own child process, yielding results as they finish."""

    def __init__(self, scenario: Scenario, trace_dir: Path | None = None, child_entry: ChildEntry = run_case_in_child):
        """``trace_dir``: where each child writes its case's profiler trace (see Runner); None for no traces."""
        self.scenario = scenario
        self.runner_options: dict[str, Any] = {"trace_dir": trace_dir}
        self.runner = Runner(scenario)
        """In-process runner, used here only to build rows of skipped and failed cases."""
        self.child_entry = child_entry
        """Function the child runs; tests pass one that first registers fault-injecting strategies."""
        self.context = multiprocessing.get_context("spawn")

    def iterate(
        self, cases: Iterable[Case], on_case_start: Callable[[Case], None] | None = None
    ) -> Iterator[CaseResult]:
        """Run ``cases`` in order, one child process each."""
        for case in cases:
            if on_case_start:
                on_case_start(case)
            reason = self._skip_reason(case.group)
            if reason is not None:
                yield self.runner.unmeasured_result(case, "skipped", reason)
            else:
                yield self._run_in_child(case)

    def _skip_reason(self, group: CaseGroup) -> str | None:
        """Find the skip reasons that need no device access, so that no child starts for those cases.

        The child checks the dtype on the device itself (runner.skip_reason).
        """
        reason = unavailable_reason(group.device)
        if reason is None:
            try:
                group.layer_config(self.scenario)
            except ConfigError as error:
                reason = str(error)
        return reason

    def _run_in_child(self, case: Case) -> CaseResult:
        reader, writer = self.context.Pipe(duplex=False)
        log_levels = {name: logging.getLogger(name).getEffectiveLevel() for name in ("", "meobench.runner")}
        process = self.context.Process(
            target=self.child_entry,
            args=(dump_scenario(self.scenario), case, writer, log_levels, self.runner_options),
            name=f"meobench-case-{case.case_id}",
            daemon=True,
        )
        process.start()
        # The parent's copy of the writing end must be closed, so a dead child reads as end of file.
        writer.close()
        try:
            return self._collect(case, process, reader)
        finally:
            reader.close()
            if process.is_alive():
                process.kill()
            process.join()

    def _collect(self, case: Case, process: multiprocessing.process.BaseProcess, reader: Connection) -> CaseResult:
        """Wait for the child's messages; a child that dies or overruns its limit becomes a failed row."""
        if not reader.poll(CHILD_START_TIMEOUT_S):
            return self._failure(case, "failed", f"child process did not start within {CHILD_START_TIMEOUT_S:g} s")
        try:
            reader.recv()  # STARTED
        except EOFError:
            return self._failure(case, "failed", _death(process))

        limit = self.scenario.measure.time_limit_s
        if not reader.poll(None if limit is None else limit + KILL_GRACE_S):
            process.kill()
            return self._failure(
                case,
                "timeout",
                f"case timed out after {limit:g} s (limit measure.time_limit_s or --time-limit); "
                "its child process was killed",
            )
        try:
            return reader.recv()
        except EOFError:
            return self._failure(case, "failed", _death(process))

    def _failure(self, case: Case, status: str, error: str) -> CaseResult:
        logger.error("case %s: %s", case.case_id, error)
        return self.runner.unmeasured_result(case, status, error)


def _death(process: multiprocessing.process.BaseProcess) -> str:
    """Describe how a child that sent no result ended: the signal that killed it, or its exit status."""
    process.join(timeout=10)
    code = process.exitcode
    if code is None:
        return "child process closed its connection without sending a result"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"child process died with {name} before sending a result"
    return f"child process exited with status {code} before sending a result"
