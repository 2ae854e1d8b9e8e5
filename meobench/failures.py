"""Failure handling for one case: the status of an exception, the per-case time limit, recovery after out-of-memory.

Statuses of a case that did not finish (``nan`` is set by the runner from the output):
- ``oom``: the device or host ran out of memory;
- ``timeout``: the case ran past its time limit;
- ``failed``: any other exception, or a child process that died.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import signal
import threading
from dataclasses import dataclass
from typing import Iterator

import torch

logger = logging.getLogger(__name__)

# Statuses of cases that ran and did not produce a measurement.
FAILURE_STATUSES = ("failed", "oom", "nan", "timeout")

# Lower-case fragments of the messages torch raises when an allocation fails outside
# torch.OutOfMemoryError: cuBLAS workspaces, MPS and the CPU allocator.
OOM_MESSAGES = ("out of memory", "cublas_status_alloc_failed", "can't allocate memory")


class CaseTimeout(Exception):
    """A case ran past its time limit."""


@dataclass(frozen=True)
class Failure:
    """Outcome of a case that raised."""

    status: str
    """``failed``, ``oom`` or ``timeout``."""
    error: str
    """The error in one line."""
    free_mem_bytes: int | None = None
    """Device memory free when an ``oom`` case failed (CUDA only); None otherwise."""


def classify_failure(error: BaseException, device: str) -> Failure:
    """Map an exception raised by a case to its status, and read the free memory after an OOM.

    Call it inside the ``except`` block, so the memory read is the memory free at the failure.
    """
    if isinstance(error, CaseTimeout):
        return Failure("timeout", str(error))
    if is_out_of_memory(error):
        return Failure("oom", one_line(error), free_device_memory(device))
    return Failure("failed", one_line(error))


def is_out_of_memory(error: BaseException) -> bool:
    """Return whether ``error`` reports a failed allocation on any device."""
    if isinstance(error, (torch.OutOfMemoryError, MemoryError)):
        return True
    message = str(error).lower()
    return isinstance(error, RuntimeError) and any(fragment in message for fragment in OOM_MESSAGES)


def free_device_memory(device: str) -> int | None:
    """Bytes free on a CUDA device (all processes counted), or None elsewhere or when it cannot be read."""
    if not device.startswith("cuda"):
        return None
    try:
        free_bytes, _ = torch.cuda.mem_get_info(torch.device(device))
    except RuntimeError as error:
        # A failure that poisoned the CUDA context makes every later CUDA call raise too.
        logger.warning("cannot read free memory on %s after out-of-memory: %s", device, one_line(error))
        return None
    return int(free_bytes)


def release_after_oom(device: str) -> None:
    """Return the cached blocks of a failed case to the device, so the next case starts from a clean cache.

    NOTE: the CUDA branch here and in free_device_memory has not run on a GPU yet.

    Call it after the ``except`` block has ended: until then the traceback keeps the
    failed case's tensors alive, and emptying the cache would free nothing.
    """
    gc.collect()
    if not device.startswith("cuda"):
        return
    try:
        torch.cuda.empty_cache()
    except RuntimeError as error:
        logger.warning("cannot empty the CUDA cache on %s: %s", device, one_line(error))
        return
    free_bytes = free_device_memory(device)
    if free_bytes is not None:
        logger.info("%s has %.0f MiB free after emptying the cache", device, free_bytes / 2**20)


@contextlib.contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise CaseTimeout inside the block once it has run for ``seconds`` (None: no limit).

    Uses SIGALRM, so the limit is checked between Python steps: a single long kernel
    or C call is not cut short, and ``--isolate`` kills such a case from outside.
    Without SIGALRM (Windows) or outside the main thread, the block runs without a limit.
    """
    usable = (
        seconds is not None and hasattr(signal, "SIGALRM") and threading.current_thread() is threading.main_thread()
    )
    if not usable:
        if seconds is not None:
            logger.info("the time limit of %s s is not enforced here (no SIGALRM in this thread)", seconds)
        yield
        return

    armed = True

    def on_alarm(signum: int, frame: object) -> None:
        # The alarm can fire between the end of the block and the disarm below.
        if armed:
            raise CaseTimeout(f"case timed out after {seconds:g} s (limit measure.time_limit_s or --time-limit)")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        armed = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def one_line(error: BaseException) -> str:
    """``ExceptionType: message`` with the message's whitespace collapsed to single spaces."""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
