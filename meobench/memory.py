"""Peak memory of one call: the most memory it held at once beyond what existed before.

On CUDA this reads the caching allocator's peak statistics. On the CPU and MPS it
replays the torch profiler's allocation events ([memory] events with signed
byte counts) in time order and takes the highest running total.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch.profiler import ProfilerActivity, profile

from meobench.devices import synchronize


@dataclass(frozen=True)
class MemoryPeak:
    peak_bytes: int
    """Highest memory allocated during the call, above the allocation at its start, in bytes."""
    method: str
    """``cuda_allocator`` or ``profiler_events``."""
    warnings: tuple[str, ...] = ()


def measure_peak_memory(function: Callable[[], object], device: str) -> MemoryPeak:
    """Run ``function`` once and measure its peak memory on ``device``."""
    if device.startswith("cuda"):
        return _cuda_peak(function, device)
    # NOTE: on MPS this records only the allocations that the CPU profiler records.
    # It has not been checked on an Apple machine.
    return _profiler_peak(function, device)


def _cuda_peak(function: Callable[[], object], device: str) -> MemoryPeak:
    synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    function()
    synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - before
    return MemoryPeak(peak, "cuda_allocator")


def _profiler_peak(function: Callable[[], object], device: str) -> MemoryPeak:
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler:
        function()
        synchronize(device)
    events = [
        (event.start_ns(), event.nbytes())
        for event in profiler.profiler.kineto_results.events()
        if event.name() == "[memory]"
    ]
    events.sort()
    running = peak = lowest = 0
    for _, nbytes in events:
        running += nbytes
        peak = max(peak, running)
        lowest = min(lowest, running)
    warnings = ()
    if lowest < 0:
        # Frees of tensors allocated before profiling started show up as negative
        # allocations; the peak above is still relative to the start of the call.
        warnings = (f"profiler reported {-lowest} bytes freed beyond what the call allocated",)
    return MemoryPeak(peak, "profiler_events", warnings)
