"""Per-phase times, top operators and trace files of one case, from torch.profiler.

Every layer marks its phases with ``torch.profiler.record_function`` under the
names in ``PHASES``. ``profile_steps`` runs the timed unit of work under a
wait/warm-up/active schedule, calling ``step()`` after each call, and turns the
active steps into per-call phase times and an operator table. With an output
folder it also writes:

- ``traces/<case_id>.<timestamp>.pt.trace.json``: from ``tensorboard_trace_handler``,
  for ``tensorboard --logdir DIR/traces`` with torch-tb-profiler (one worker per case);
- ``chrome/<case_id>.json``: a copy of that file under a stable name, for
  chrome://tracing or Perfetto;
- ``operators/<case_id>.csv``: the top operators by self time;
- ``memory/<case_id>.html``: the profiler's memory timeline, when it can export one.
"""

from __future__ import annotations

import glob
import logging
import shutil
import statistics
import time
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import pandas as pd
from torch.autograd.profiler_util import FunctionEvent, FunctionEventAvg
from torch.profiler import ProfilerActivity, profile, schedule, tensorboard_trace_handler

from meobench.devices import synchronize

logger = logging.getLogger(__name__)

# record_function names the layers use, in the order a forward pass reaches them.
PHASES = ("token_attention", "router", "dispatch", "merge", "expert", "combine")
# Operators kept in the table and CSV of one case.
TOP_OPERATORS = 20
# Columns of operators/<case_id>.csv; times are per profiled call.
OPERATOR_COLUMNS = [
    "rank", "operator", "calls_per_step", "self_cpu_ms", "cpu_total_ms", "self_device_ms", "device_total_ms",
]  # fmt: skip
# Prefix of the range the profiler opens around each step.
STEP_RANGE_PREFIX = "ProfilerStep"


@dataclass(frozen=True)
class ProfileSettings:
    """The profiler schedule, and where to write trace files."""

    wait: int = 0
    """Calls run with the profiler off at the start of the schedule."""
    warmup: int = 1
    """Calls recorded and discarded, so that the profiler's start-up cost stays out of the active steps."""
    active: int = 3
    """Calls recorded and summarised; 0 turns profiling off."""
    out_dir: Path | None = None
    """Folder for traces/, chrome/, operators/ and memory/; None writes nothing and records no shapes or memory."""


@dataclass(frozen=True)
class OperatorStat:
    """One row of the top-operators table, times per profiled call."""

    name: str
    calls_per_step: float
    self_cpu_s: float
    cpu_total_s: float
    self_device_s: float
    device_total_s: float


@dataclass(frozen=True)
class ProfileSummary:
    """Time breakdown of one profiled case."""

    steps: int
    """Active steps the numbers below are averaged over."""
    clock: str
    """``cpu``: host wall time inside each range. ``device``: kernel time launched inside it (CUDA)."""
    phase_s: dict[str, float]
    """Seconds per call of each phase seen in the trace; phases the variant does not mark are absent."""
    operators: tuple[OperatorStat, ...]
    """Operators with the most self time, most first."""
    call_s: float = 0.0
    """Median wall time of the active calls, profiler overhead included, in seconds. Set against the
    phase sum, it separates work outside the phases from drift between these calls and the timed ones."""
    files: tuple[Path, ...] = ()
    """Files written under ``ProfileSettings.out_dir``."""

    @property
    def phase_sum_s(self) -> float:
        return sum(self.phase_s.values())


def profile_steps(
    function: Callable[[], object], device: str, settings: ProfileSettings, case_id: str
) -> ProfileSummary:
    """Run ``function`` ``wait + warmup + active`` times under torch.profiler and summarise the active steps."""
    use_device = device.startswith("cuda")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if use_device else [])
    tracing = settings.out_dir is not None
    written: list[Path] = []

    def on_trace_ready(profiler: profile) -> None:
        if tracing:
            written.extend(_write_trace_files(profiler, Path(settings.out_dir), case_id, device))

    with profile(
        activities=activities,
        schedule=schedule(wait=settings.wait, warmup=settings.warmup, active=settings.active, repeat=1),
        on_trace_ready=on_trace_ready,
        record_shapes=tracing,
        profile_memory=tracing,
        # The memory timeline needs Python stacks to tell tensors apart.
        with_stack=tracing,
        acc_events=True,
    ) as profiler:
        call_s = []
        for _ in range(settings.wait + settings.warmup + settings.active):
            start = time.perf_counter()
            function()
            synchronize(device)
            call_s.append(time.perf_counter() - start)
            profiler.step()

    events = profiler.events()
    operators = top_operators(profiler.key_averages(), events, settings.active, use_device)
    if tracing:
        written.append(write_operators_csv(operators, Path(settings.out_dir) / "operators" / f"{case_id}.csv"))
    return ProfileSummary(
        steps=settings.active,
        clock="device" if use_device else "cpu",
        phase_s=phase_times(events, settings.active, use_device),
        operators=operators,
        call_s=statistics.median(call_s[-settings.active :]),
        files=tuple(written),
    )


def phase_times(events: Iterable[FunctionEvent], steps: int, use_device: bool = False) -> dict[str, float]:
    """Seconds per step of each phase in ``events``: the median over the ``steps`` profiled steps.

    Each phase range contributes its total (inclusive) time minus the total time of
    the phase ranges nested inside it, nearest ones only, so nested phases are counted
    once, under their own name. Self time would be wrong here: a range's self time
    excludes the operators it wraps, which are the work being attributed. Within a
    step every occurrence is summed, because the MoE per-expert loop opens one
    ``expert`` and one ``combine`` range per expert in each call. The median over steps
    keeps one step slowed by another process from moving the result.

    ``use_device`` switches from host wall time (``cpu_time_total``) to the device
    time of the kernels launched inside the range (``device_time_total``), the time
    that matters for asynchronous CUDA work. Device time leaves out idle gaps between
    kernels, so on CUDA the phase sum runs below the measured latency.
    """
    if steps < 1:
        raise ValueError(f"steps={steps} must be at least 1")
    per_step: dict[int | None, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for event in events:
        if event.name in PHASES:
            nested = sum(_range_us(child, use_device) for child in _nearest_phases(event))
            per_step[_enclosing_step(event)][event.name] += _range_us(event, use_device) - nested
    # A step that opened no phase range still counts, as zero.
    totals = list(per_step.values()) + [{}] * max(0, steps - len(per_step))
    seen = [name for name in PHASES if any(name in step_totals for step_totals in totals)]
    return {name: statistics.median(step_totals.get(name, 0.0) for step_totals in totals) / 1e6 for name in seen}


def _enclosing_step(event: FunctionEvent) -> int | None:
    """Id of the profiler step range around ``event``, or None outside every step."""
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith(STEP_RANGE_PREFIX):
            return parent.id
        parent = parent.cpu_parent
    return None


def _range_us(event: FunctionEvent, use_device: bool) -> float:
    return event.device_time_total if use_device else event.cpu_time_total


def _nearest_phases(event: FunctionEvent) -> Iterator[FunctionEvent]:
    for child in event.cpu_children:
        if child.name in PHASES:
            yield child
        else:
            yield from _nearest_phases(child)


def top_operators(
    averages: Iterable[FunctionEventAvg],
    events: Iterable[FunctionEvent],
    steps: int,
    use_device: bool,
    limit: int = TOP_OPERATORS,
) -> tuple[OperatorStat, ...]:
    """Rank operators and ranges by self time (device self time on CUDA), per step, from key averages.

    Python frames (recorded when tracing, for the memory timeline) and the profiler's
    own step ranges are left out: they wrap the operators and do no tensor work.
    """
    python_frames = {event.key for event in events if event.is_python_function}
    rows = []
    for average in averages:
        if average.key.startswith(STEP_RANGE_PREFIX) or average.key in python_frames:
            continue
        rows.append(
            OperatorStat(
                name=average.key,
                calls_per_step=average.count / steps,
                self_cpu_s=average.self_cpu_time_total / 1e6 / steps,
                cpu_total_s=average.cpu_time_total / 1e6 / steps,
                self_device_s=average.self_device_time_total / 1e6 / steps,
                device_total_s=average.device_time_total / 1e6 / steps,
            )
        )
    key = (lambda row: row.self_device_s) if use_device else (lambda row: row.self_cpu_s)
    rows.sort(key=key, reverse=True)
    return tuple(rows[:limit])


def operators_frame(operators: Iterable[OperatorStat]) -> pd.DataFrame:
    """Build the operator table with units in the column names, times in ms per step."""
    return pd.DataFrame(
        [
            {
                "rank": rank,
                "operator": row.name,
                "calls_per_step": row.calls_per_step,
                "self_cpu_ms": row.self_cpu_s * 1e3,
                "cpu_total_ms": row.cpu_total_s * 1e3,
                "self_device_ms": row.self_device_s * 1e3,
                "device_total_ms": row.device_total_s * 1e3,
            }
            for rank, row in enumerate(operators, start=1)
        ],
        columns=OPERATOR_COLUMNS,
    )


def write_operators_csv(operators: Iterable[OperatorStat], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    operators_frame(operators).to_csv(path, index=False)
    return path


def _write_trace_files(profiler: profile, out_dir: Path, case_id: str, device: str) -> list[Path]:
    """Write the TensorBoard trace, its Chrome-trace copy and the memory timeline of one case."""
    traces = out_dir / "traces"
    tensorboard_trace_handler(str(traces), worker_name=case_id)(profiler)
    # The handler names the file <worker>.<time in ns>.pt.trace.json and does not return the name.
    written = max(traces.glob(f"{glob.escape(case_id)}.*.pt.trace.json"), key=lambda path: path.stat().st_mtime_ns)
    chrome = out_dir / "chrome" / f"{case_id}.json"
    chrome.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(written, chrome)
    files = [written, chrome]

    timeline = out_dir / "memory" / f"{case_id}.html"
    timeline.parent.mkdir(parents=True, exist_ok=True)
    try:
        # NOTE: torch 2.13 marks export_memory_timeline deprecated in favour of CUDA-only
        # memory snapshots; it still exports CPU and CUDA timelines.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            profiler.export_memory_timeline(str(timeline), device=_timeline_device(device))
        files.append(timeline)
    except Exception as error:  # noqa: BLE001 - a missing timeline must not lose the trace
        logger.warning("memory timeline of %s was not exported: %s", case_id, error)
    return files


def _timeline_device(device: str) -> str:
    return "cuda:0" if device == "cuda" else device
