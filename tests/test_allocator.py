"""The CPU allocator policy: glibc serves a large tensor from the heap under ``retain``, from mmap under ``system``."""

from __future__ import annotations

import ctypes

import pytest
import torch

from meobench import allocator
from meobench.allocator import apply_cpu_allocator, describe_cpu_allocator
from meobench.errors import ScenarioError
from meobench.scenario import parse_scenario


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _mmapped_blocks() -> int:
    """Return glibc's count of blocks currently served by mmap (mallinfo2().hblks)."""
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    return libc.mallinfo2().hblks


needs_glibc = pytest.mark.skipif(allocator._glibc_mallopt() is None, reason="mallopt and mallinfo2 are glibc's")


@needs_glibc
@pytest.mark.parametrize("policy, expected_new_mmaps", [("system", 1), ("retain", 0)])
def test_policy_decides_large_tensor_mmap(policy: str, expected_new_mmaps: int) -> None:
    # 16 Mi float32 elements = 64 MiB, far above glibc's 128 KiB starting mmap threshold.
    try:
        apply_cpu_allocator(policy)
        before = _mmapped_blocks()
        tensor = torch.empty(16 * 1024 * 1024)
        assert _mmapped_blocks() - before == expected_new_mmaps
        del tensor
    finally:
        apply_cpu_allocator("retain")


@needs_glibc
def test_describe_names_policy_on_glibc() -> None:
    assert describe_cpu_allocator("retain") == "retain"
    assert describe_cpu_allocator("system") == "system"


def test_describe_explains_non_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allocator, "_glibc_mallopt", lambda: None)
    assert describe_cpu_allocator("retain").startswith("system (the C library is not glibc")


def test_unknown_policy_raises() -> None:
    with pytest.raises(ValueError, match="unknown CPU allocator policy 'tcmalloc'"):
        apply_cpu_allocator("tcmalloc")


def test_scenario_rejects_unknown_policy() -> None:
    text = "name: s\nvariants: [dense]\ncpu_allocator: jemalloc\n"
    with pytest.raises(ScenarioError, match="cpu_allocator: Input should be .retain. or .system."):
        parse_scenario(text)
