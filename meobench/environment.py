"""A fingerprint of the software and hardware a run used, stored with its results.

Two parts of it decide whether runs can be compared: the device fingerprint
(``device_identity``: what the hardware is) and the software stack
(``stack_identity``: torch, CUDA, cuDNN, Triton and Python versions, and the
CPU allocator policy). Everything
else (clocks, commit, timestamp) is recorded to explain a difference, not to
forbid a comparison.
"""

from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import logging
import platform
import subprocess
from pathlib import Path
from typing import Any

import psutil
import torch
from torch.utils import collect_env

import meobench
from meobench.allocator import describe_cpu_allocator
from meobench.devices import cpu_model, device_name
from meobench.layers.compiled import kernel_unavailable_reason

logger = logging.getLogger(__name__)

# Device fingerprint fields that identify the hardware; the others (clocks, driver) describe its state.
DEVICE_IDENTITY_KEYS = ("kind", "name", "compute_capability", "sm_count", "memory_bytes", "logical_cores", "threads")
# Environment fields that make up the software stack.
# The CPU allocator policy is part of it: it changes what a large allocation costs.
STACK_KEYS = ("torch_version", "cuda_version", "cudnn_version", "triton_version", "python_version", "cpu_allocator")
# Linux file with the CPU frequency governor. Most containers and virtual machines lack it.
GOVERNOR_PATH = Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")


def collect_environment(
    devices: list[str] | None = None,
    scenario_path: str | Path | None = None,
    timing: dict[str, Any] | None = None,
    threads: int | None = None,
    cpu_allocator: str | None = None,
) -> dict[str, Any]:
    """Versions, hardware, git state, scenario file hash, timing settings and a UTC timestamp.

    ``devices`` lists the devices the run used; each gets a fingerprint under ``devices``.
    ``threads`` is the intra-op thread count the cases run with, when the scenario sets one.
    ``cpu_allocator`` is the scenario's CPU allocator policy (meobench.allocator).
    """
    system = collect_env.get_env_info()
    environment: dict[str, Any] = {
        "meobench_version": meobench.__version__,
        "git_commit": git_commit(),
        "git_dirty": git_dirty(),
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "os": system.os,
        "libc_version": system.libc_version,
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
        "cudnn_version": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "triton_version": _package_version("triton"),
        "nvidia_driver_version": system.nvidia_driver_version,
        "cuda_available": torch.cuda.is_available(),
        **cpu_details(),
        "torch_threads": threads or torch.get_num_threads(),
        "cpu_allocator": describe_cpu_allocator(cpu_allocator) if cpu_allocator else None,
        "cpu_kernels": kernel_unavailable_reason() or "compiled",
        "timestamp_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if torch.cuda.is_available():
        environment["cuda_devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    if devices:
        environment["devices"] = {device: device_fingerprint(device, threads) for device in devices}
    if scenario_path is not None:
        environment["scenario_file"] = str(scenario_path)
        environment["scenario_sha256"] = hashlib.sha256(Path(scenario_path).read_bytes()).hexdigest()
    if timing is not None:
        environment["timing"] = timing
    return environment


def cpu_details() -> dict[str, Any]:
    """CPU model, core counts, frequency, governor and total memory, from py-cpuinfo and psutil."""
    frequency = psutil.cpu_freq()
    return {
        "cpu_model": cpu_model(),
        "cpu_count": psutil.cpu_count(logical=True),
        "cpu_physical_cores": psutil.cpu_count(logical=False),
        "cpu_freq_mhz": round(frequency.current, 1) if frequency else None,
        "cpu_freq_max_mhz": round(frequency.max, 1) if frequency and frequency.max else None,
        "cpu_governor": _read_text(GOVERNOR_PATH),
        "memory_total_bytes": psutil.virtual_memory().total,
    }


def device_fingerprint(device: str, threads: int | None = None) -> dict[str, Any]:
    """Describe the hardware behind ``device``: identity fields first, then state such as clocks."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return _cuda_fingerprint(torch.device(device).index or 0)
    if device == "mps":
        return {"kind": "mps", "name": device_name(device)}
    return {
        "kind": "cpu",
        "name": cpu_model(),
        "logical_cores": psutil.cpu_count(logical=True),
        "threads": threads or torch.get_num_threads(),
    }


def device_identity(fingerprint: dict[str, Any]) -> dict[str, Any]:
    """Select the fields of a device fingerprint that identify the hardware, leaving out its state."""
    return {key: fingerprint[key] for key in DEVICE_IDENTITY_KEYS if key in fingerprint}


def stack_identity(environment: dict[str, Any]) -> dict[str, Any]:
    """Select the software stack from an environment: torch, CUDA, cuDNN, Triton and Python versions and the CPU
    allocator policy."""
    return {key: environment.get(key) for key in STACK_KEYS}


def fingerprint_digest(fingerprint: dict[str, Any]) -> str:
    """Hash a device's identity to 16 hex digits, stable across runs, to name cache files."""
    identity = device_identity(fingerprint)
    text = ",".join(f"{key}={identity[key]}" for key in sorted(identity))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _cuda_fingerprint(index: int) -> dict[str, Any]:
    properties = torch.cuda.get_device_properties(index)
    fingerprint: dict[str, Any] = {
        "kind": "cuda",
        "name": properties.name,
        "compute_capability": f"{properties.major}.{properties.minor}",
        "sm_count": properties.multi_processor_count,
        "memory_bytes": properties.total_memory,
    }
    uuid = getattr(properties, "uuid", None)
    fingerprint.update(_nvml_details(str(uuid)) if uuid is not None else {})
    return fingerprint


def _nvml_details(uuid: str) -> dict[str, Any]:
    """Driver version and observed clocks from NVML, or nothing when NVML is absent or fails.

    The device is looked up by UUID, because CUDA_VISIBLE_DEVICES can make torch's
    index differ from NVML's.
    NOTE: written against nvidia-ml-py 13 and not yet run on a GPU machine.
    """
    try:
        import pynvml
    except ImportError:
        return {}
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as error:
        logger.info("NVML is not available (%s); clocks and driver version are not recorded", error)
        return {}
    try:
        handle = pynvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith("GPU-") else f"GPU-{uuid}")
        driver = pynvml.nvmlSystemGetDriverVersion()
        return {
            "driver_version": driver.decode() if isinstance(driver, bytes) else driver,
            "sm_clock_mhz": pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM),
            "sm_clock_max_mhz": pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_SM),
            "memory_clock_mhz": pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_MEM),
            "memory_clock_max_mhz": pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_MEM),
        }
    except pynvml.NVMLError as error:
        logger.info("NVML query for GPU %s failed (%s); clocks are not recorded", uuid, error)
        return {}
    finally:
        pynvml.nvmlShutdown()


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def git_commit() -> str | None:
    """Commit of the meobench checkout, when it is one and git is installed."""
    return _git("rev-parse", "HEAD") or None


def git_dirty() -> bool | None:
    """Report whether the meobench checkout has uncommitted changes to tracked files (None outside a checkout)."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    return None if status is None else bool(status)


def _git(*arguments: str) -> str | None:
    """Output of a git command in the meobench checkout, or None when it fails."""
    root = Path(meobench.__file__).resolve().parent.parent
    try:
        result = subprocess.run(["git", *arguments], cwd=root, capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None
