"""Latency measurement: warm-up, synchronised repeats, raw samples in seconds.

Design points:
- Every sample is one call of the function, so the raw samples are the
  distribution users see, not block averages.
- CUDA work is asynchronous, so the device is synchronised before each sample and
  the sample is timed with CUDA events; elsewhere time.perf_counter is used.
- Repeats stop at ``max_repeats``, when the time budget is spent, or early when the
  relative IQR falls below the target after ``min_repeats``. The reason is recorded.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from meobench.devices import synchronize

# Relative IQR (IQR / median) above which a measurement is flagged as noisy.
NOISY_REL_IQR = 0.10
# Fewer samples than this make the IQR unreliable.
MIN_SAMPLES_FOR_IQR = 4


@dataclass(frozen=True)
class TimingSettings:
    warmup: int = 2
    """Untimed calls before the first sample."""
    min_repeats: int = 5
    """Samples always taken."""
    max_repeats: int = 50
    """Samples at most."""
    max_time_s: float = 2.0
    """Budget for the timed calls, in seconds; at least ``min_repeats`` samples are taken anyway."""
    target_rel_iqr: float = 0.05
    """Stop once IQR / median is below this after ``min_repeats`` samples; 0 disables."""


@dataclass(frozen=True)
class Measurement:
    """Raw latency samples of one case, with statistics computed on demand."""

    samples_s: tuple[float, ...]
    """One entry per timed call, in seconds."""
    stop_reason: str
    """``max_repeats``, ``time_budget`` or ``target_rel_iqr``."""
    warnings: tuple[str, ...] = field(default=())

    @property
    def repeats(self) -> int:
        return len(self.samples_s)

    @property
    def median_s(self) -> float:
        return statistics.median(self.samples_s)

    @property
    def min_s(self) -> float:
        return min(self.samples_s)

    @property
    def iqr_s(self) -> float:
        """Interquartile range (75th minus 25th percentile, inclusive method), in seconds."""
        if len(self.samples_s) < 2:
            return 0.0
        q1, _, q3 = statistics.quantiles(self.samples_s, n=4, method="inclusive")
        return q3 - q1

    @property
    def rel_iqr(self) -> float:
        return self.iqr_s / self.median_s if self.median_s > 0 else 0.0


def timer_name(device: str) -> str:
    """Name the clock that times calls on ``device``, as recorded with a run."""
    return "cuda_events" if device.startswith("cuda") else "time.perf_counter"


def measure_latency(function: Callable[[], object], device: str, settings: TimingSettings) -> Measurement:
    """Time ``function`` on ``device`` under ``settings``."""
    for _ in range(settings.warmup):
        function()
    synchronize(device)

    timer = _cuda_sample if device.startswith("cuda") else _host_sample
    samples: list[float] = []
    started = time.perf_counter()
    stop_reason = "max_repeats"
    while len(samples) < settings.max_repeats:
        samples.append(timer(function, device))
        if len(samples) < settings.min_repeats:
            continue
        if time.perf_counter() - started >= settings.max_time_s:
            stop_reason = "time_budget"
            break
        if len(samples) >= MIN_SAMPLES_FOR_IQR and _rel_iqr(samples) < settings.target_rel_iqr:
            stop_reason = "target_rel_iqr"
            break
    return Measurement(tuple(samples), stop_reason, _noise_warnings(samples))


def _host_sample(function: Callable[[], object], device: str) -> float:
    start = time.perf_counter()
    function()
    synchronize(device)
    return time.perf_counter() - start


def _cuda_sample(function: Callable[[], object], device: str) -> float:
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    start.record()
    function()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3  # elapsed_time is in milliseconds


def _rel_iqr(samples: list[float]) -> float:
    return Measurement(tuple(samples), "").rel_iqr


def _noise_warnings(samples: list[float]) -> tuple[str, ...]:
    warnings = []
    if len(samples) < MIN_SAMPLES_FOR_IQR:
        warnings.append(f"only {len(samples)} samples; the IQR is unreliable")
    rel_iqr = _rel_iqr(samples)
    if rel_iqr > NOISY_REL_IQR:
        warnings.append(f"noisy: IQR is {rel_iqr:.0%} of the median (above {NOISY_REL_IQR:.0%})")
    return tuple(warnings)
