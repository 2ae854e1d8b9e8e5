"""The policy for large freed blocks in the C allocator behind torch's CPU tensors.

glibc's malloc serves a large request with fresh pages from mmap and returns
them to the system when the block is freed. So a call that allocates a large
output pays a page fault for every 4 KiB page it first writes. On a 2-core CPU,
a layer that allocated 75 MB per call spent more time in those faults than in
its arithmetic. glibc also moves the size above which it uses mmap as the
process runs, so the same call can take a different time in two processes with
different allocation histories. More repeats within one process do not remove
that shift.

Policies:

- ``retain``: on glibc, large blocks come from the heap and freed memory stays
  with the process. After the warm-up calls a case reuses its pages, as it
  would with jemalloc or tcmalloc (the allocators that Intel Extension for
  PyTorch's performance tuning guide recommends for CPU). The resident memory
  of the process then stays at the highest it reached.
- ``system``: glibc's own behaviour.

Elsewhere (macOS, musl) both policies leave the allocator as it is, and
``describe_cpu_allocator`` returns that reason. The policy applies to the whole process.
``system`` after ``retain`` restores glibc's starting thresholds, but glibc
then no longer adjusts them as it does in a fresh process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging

logger = logging.getLogger(__name__)

CPU_ALLOCATOR_POLICIES = ("retain", "system")

# mallopt parameter numbers from glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4
# glibc's starting values of those parameters.
_GLIBC_DEFAULTS = {_M_TRIM_THRESHOLD: 128 * 1024, _M_MMAP_THRESHOLD: 128 * 1024, _M_MMAP_MAX: 65536}
# ``retain``: mmap no block, and return heap memory only when 2 GiB (mallopt's int limit) is free at its top.
_RETAIN = {_M_MMAP_MAX: 0, _M_TRIM_THRESHOLD: 2**31 - 1}

_applied: str | None = None


def apply_cpu_allocator(policy: str) -> None:
    """Apply ``policy`` to this process; ``describe_cpu_allocator`` returns what is in force afterwards."""
    global _applied
    if policy not in CPU_ALLOCATOR_POLICIES:
        raise ValueError(f"unknown CPU allocator policy {policy!r}; use one of {', '.join(CPU_ALLOCATOR_POLICIES)}")
    mallopt = _glibc_mallopt()
    if mallopt is None or policy == _applied:
        return
    if policy == "retain":
        settings = _RETAIN
    elif _applied == "retain":
        settings = _GLIBC_DEFAULTS
    else:
        settings = {}
    for parameter, value in settings.items():
        if mallopt(parameter, value) != 1:
            logger.warning(
                "mallopt(%d, %d) failed; CPU allocator policy %r is only partly in force", parameter, value, policy
            )
    _applied = policy


def describe_cpu_allocator(policy: str) -> str:
    """Return what ``apply_cpu_allocator(policy)`` puts in force here, for the run's environment record."""
    if _glibc_mallopt() is None:
        return "system (the C library is not glibc, so the allocator is left as it is)"
    return policy


@functools.cache
def _glibc_mallopt() -> ctypes._CFuncPtr | None:
    """Return glibc's mallopt(int, int), or None on another C library."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it
    except (OSError, AttributeError):
        return None
    mallopt = libc.mallopt
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return mallopt
