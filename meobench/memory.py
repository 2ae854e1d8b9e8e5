"""Peak memory of one call: the most memory it held at once beyond what existed before.

On CUDA this reads the caching allocator's peak statistics after one warm-up call
(so the steady state is measured, not first-call workspace allocations). On the CPU
and MPS it replays the torch profiler's allocation events ([memory] events with
signed byte counts) in time order and takes the highest running total.

Two numbers come out: the activation peak (above what was allocated when the call
started, so weights and inputs are excluded) and the absolute peak (everything
allocated at that moment, weights and inputs included).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import torch
from torch.profiler import ProfilerActivity, profile

from meobench.devices import synchronize


@dataclass(frozen=True)
class MemoryPeak:
    peak_bytes: int
    """Highest memory allocated during the call, above the allocation at its start, in bytes (activation memory)."""
    method: str
    """``cuda_allocator`` or ``profiler_events``."""
    absolute_bytes: int | None = None
    """Highest memory allocated during the call in all, in bytes. CUDA: the allocator's peak.
    Elsewhere: ``resident_bytes`` given by the caller plus ``peak_bytes``."""
    negative_bytes: int = 0
    """Bytes the profiler reported freed beyond what the call allocated; non-zero flags a negative running total."""
    warnings: tuple[str, ...] = ()


def measure_peak_memory(function: Callable[[], object], device: str, resident_bytes: int = 0) -> MemoryPeak:
    """Run ``function`` and measure its peak memory on ``device``.

    ``resident_bytes`` (weights and inputs the call reads) is added to the activation
    peak to estimate the absolute peak where no allocator statistics exist.
    """
    if device.startswith("cuda"):
        return _cuda_peak(function, device)
    # NOTE: on MPS this records only the allocations that the CPU profiler records.
    # It has not been checked on an Apple machine.
    return _profiler_peak(function, device, resident_bytes)


def _cuda_peak(function: Callable[[], object], device: str) -> MemoryPeak:
    # NOTE: written against the documented allocator API but not yet run on a GPU.
    function()
    synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    function()
    synchronize(device)
    absolute = torch.cuda.max_memory_allocated(device)
    return MemoryPeak(absolute - before, "cuda_allocator", absolute_bytes=absolute)


def _profiler_peak(function: Callable[[], object], device: str, resident_bytes: int) -> MemoryPeak:
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler:
        function()
        synchronize(device)
    events = [
        (event.start_ns(), event.nbytes())
        for event in profiler.profiler.kineto_results.events()
        if event.name() == "[memory]"
    ]
    peak, lowest = replay_allocations(events)
    warnings = ()
    if lowest < 0:
        warnings = (f"profiler reported {-lowest} bytes freed beyond what the call allocated",)
    return MemoryPeak(peak, "profiler_events", resident_bytes + peak, -lowest, warnings)


def replay_allocations(events: Iterable[tuple[int, int]]) -> tuple[int, int]:
    """Replay (timestamp, signed bytes) allocation events in time order; return the highest and lowest running total.

    A lowest total below zero means the profiler recorded frees without their
    allocations. torch 2.13 drops the free of a block allocated before profiling
    started and logs a warning instead, but profilers have reported negative
    allocations for other reasons. Nothing is clamped, and the caller flags the row.
    """
    running = peak = lowest = 0
    for _, nbytes in sorted(events):
        running += nbytes
        peak = max(peak, running)
        lowest = min(lowest, running)
    return peak, lowest


def tensor_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes held by ``tensors``, each storage counted once."""
    storages = {}
    for tensor in tensors:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())
