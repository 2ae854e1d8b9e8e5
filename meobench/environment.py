"""A description of the software and hardware a run used, stored with its results."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

import meobench
from meobench.devices import cpu_model, device_name


def collect_environment(devices: list[str] | None = None) -> dict[str, Any]:
    """Versions, hardware names, thread count, git commit and a UTC timestamp."""
    environment: dict[str, Any] = {
        "meobench_version": meobench.__version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda_version": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "git_commit": git_commit(),
        "timestamp_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if torch.cuda.is_available():
        environment["cuda_devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    if devices:
        environment["devices"] = {device: device_name(device) for device in devices}
    return environment


def git_commit() -> str | None:
    """Commit of the meobench checkout, when it is one and git is installed."""
    root = Path(meobench.__file__).resolve().parent.parent
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None
