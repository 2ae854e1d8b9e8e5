"""Device and dtype resolution, availability checks and synchronisation."""

from __future__ import annotations

import functools
import platform

import torch

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float64": torch.float64,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


def resolve_device(name: str) -> str:
    """Map ``auto`` to cuda, else mps, else cpu; return other names unchanged."""
    if name != "auto":
        return name
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def unavailable_reason(device: str) -> str | None:
    """Why ``device`` cannot be used on this machine, or None when it can."""
    if device == "cpu":
        return None
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            return f"device {device} is not available: this torch build or machine has no CUDA device"
        index = torch.device(device).index or 0
        if index >= torch.cuda.device_count():
            return f"device {device} is not available: only {torch.cuda.device_count()} CUDA device(s) found"
        return None
    if device == "mps":
        if not torch.backends.mps.is_available():
            return "device mps is not available: this machine has no Apple Metal device"
        return None
    return f"device {device!r} is not known; use cpu, cuda, cuda:N or mps"


@functools.cache
def dtype_unsupported_reason(device: str, dtype: str) -> str | None:
    """Why ``dtype`` cannot run matrix products on ``device``, or None when it can.

    Probes a small batched matrix product rather than trusting a table, since support
    depends on the torch build and the hardware.
    """
    torch_dtype = DTYPES[dtype]
    if device.startswith("cuda") and dtype == "bfloat16" and not torch.cuda.is_bf16_supported():
        return f"dtype bfloat16 is not supported on {device_name(device)}"
    try:
        a = torch.ones(2, 4, 4, device=device, dtype=torch_dtype)
        torch.baddbmm(a, a, a)
        synchronize(device)
    except (RuntimeError, TypeError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return f"dtype {dtype} is not supported on {device}: {first_line}"
    return None


def synchronize(device: str) -> None:
    """Wait for queued work on ``device`` to finish (a no-op on the CPU)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
    elif device == "mps":
        torch.mps.synchronize()


@functools.cache
def device_name(device: str) -> str:
    """Human-readable name of the hardware behind ``device``."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    if device == "mps":
        return "Apple MPS"
    return cpu_model()


@functools.cache
def cpu_model() -> str:
    """CPU brand string from py-cpuinfo, or the platform's processor name."""
    try:
        import cpuinfo

        brand = cpuinfo.get_cpu_info().get("brand_raw")
    except Exception:  # noqa: BLE001 - py-cpuinfo probes the hardware and may fail in containers
        brand = None
    return brand or platform.processor() or platform.machine()
