"""meobench's folder for files worth keeping between runs: calibrations and compiled kernels."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs


def user_cache_dir() -> Path:
    """Return $MEOBENCH_CACHE_DIR, else the platform's user cache folder for meobench."""
    return Path(os.environ.get("MEOBENCH_CACHE_DIR") or platformdirs.user_cache_dir("meobench"))
