"""Device ceilings for the roofline: matrix-multiply peak per dtype and memory copy bandwidth.

Both are measured, never taken from a datasheet, and cached per device
fingerprint in the user cache folder (``MEOBENCH_CACHE_DIR`` overrides it), so
``meobench run`` can report each case against them without measuring again.
"""

from __future__ import annotations

import datetime
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from meobench.cachedir import user_cache_dir
from meobench.devices import DTYPES, dtype_unsupported_reason, unavailable_reason
from meobench.environment import device_fingerprint, device_identity, fingerprint_digest
from meobench.errors import MeobenchError
from meobench.roofline import ridge_flop_per_byte
from meobench.timing import TimingSettings, measure_latency

logger = logging.getLogger(__name__)

# Largest square matrix size of the peak measurement. On the CPU, 512 (0.27 GFLOP
# per product) is short enough that some samples run unpreempted on a loaded
# machine: on a shared 2-core CPU under load, one thread measured about 100
# GFLOP/s at sizes 256 to 512 and 22 GFLOP/s at 1024. A dtype the device runs
# slowly (float16 on most CPUs) is measured at a smaller size that keeps one
# product under MAX_PRODUCT_S.
MATMUL_SIZE = {"cuda": 8192, "cpu": 512, "mps": 4096}
MIN_MATMUL_SIZE = 128
MAX_PRODUCT_S = 0.25
# Bytes copied per bandwidth sample: several times the largest caches of the device.
COPY_BYTES = {"cuda": 2**30, "cpu": 2**27, "mps": 2**28}
# Best-of sampling: the peak is the fastest sample, so stop after a fixed count or budget.
CALIBRATION_TIMING = TimingSettings(warmup=1, min_repeats=5, max_repeats=50, max_time_s=1.0, target_rel_iqr=0.0)


@dataclass(frozen=True)
class Calibration:
    """Measured ceilings of one device."""

    fingerprint: dict[str, Any]
    """Device fingerprint the measurement belongs to (meobench.environment.device_fingerprint)."""
    matmul_tflops: dict[str, float]
    """Best square matrix-product rate per dtype, in 10^12 FLOP/s (a multiply-add counted as 2)."""
    copy_gb_per_s: float
    """Best device-to-device copy rate, reads plus writes, in 10^9 bytes/s."""
    matmul_size: dict[str, int]
    """Square matrix size measured per dtype."""
    copy_bytes: int
    measured_utc: str
    skipped_dtypes: dict[str, str] = field(default_factory=dict)
    """Reason per dtype the device could not run."""

    @property
    def ridge_flop_per_byte(self) -> dict[str, float]:
        """Arithmetic intensity where the roofline turns from memory- to compute-bound, per dtype."""
        return {dtype: ridge_flop_per_byte(tflops, self.copy_gb_per_s) for dtype, tflops in self.matmul_tflops.items()}

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def cache_dir() -> Path:
    """Folder of cached calibrations: $MEOBENCH_CACHE_DIR, else the platform's user cache folder."""
    return user_cache_dir() / "calibration"


def cache_path(fingerprint: dict[str, Any]) -> Path:
    return cache_dir() / f"{fingerprint_digest(fingerprint)}.json"


def load_cached(device: str, threads: int | None = None) -> Calibration | None:
    """Read the cached calibration of ``device`` as it is now; None when none exists or it is unreadable."""
    fingerprint = device_fingerprint(device, threads)
    path = cache_path(fingerprint)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        calibration = Calibration(**data)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as error:
        logger.warning("ignoring unreadable calibration cache %s (%s); run meobench calibrate --force", path, error)
        return None
    if device_identity(calibration.fingerprint) != device_identity(fingerprint):
        return None
    return calibration


def save(calibration: Calibration) -> Path:
    path = cache_path(calibration.fingerprint)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(calibration.to_json(), indent=2) + "\n", encoding="utf-8")
    return path


def measure(device: str, dtypes: tuple[str, ...] = tuple(DTYPES)) -> Calibration:
    """Measure the matrix-product peak for each dtype the device runs, and the copy bandwidth."""
    reason = unavailable_reason(device)
    if reason:
        raise MeobenchError(f"cannot calibrate: {reason}.")
    kind = device.split(":")[0]
    largest, copy_bytes = MATMUL_SIZE.get(kind, 1024), COPY_BYTES.get(kind, 2**27)
    peaks, sizes, skipped = {}, {}, {}
    for dtype in dtypes:
        unsupported = dtype_unsupported_reason(device, dtype)
        if unsupported:
            skipped[dtype] = unsupported
            continue
        sizes[dtype] = affordable_size(device, dtype, largest)
        peaks[dtype] = matmul_tflops(device, dtype, sizes[dtype])
        logger.info("%s %s matrix product at %d: %.3g TFLOP/s", device, dtype, sizes[dtype], peaks[dtype])
    return Calibration(
        fingerprint=device_fingerprint(device),
        matmul_tflops=peaks,
        copy_gb_per_s=copy_gb_per_s(device, copy_bytes),
        matmul_size=sizes,
        copy_bytes=copy_bytes,
        measured_utc=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        skipped_dtypes=skipped,
    )


def affordable_size(device: str, dtype: str, largest: int) -> int:
    """Double the matrix size from MIN_MATMUL_SIZE up to ``largest`` while the next product fits MAX_PRODUCT_S.

    Each step times the current size, so a device that small products leave
    launch-bound (a GPU) still reaches ``largest``, and a slow dtype stops early.
    """
    probe = TimingSettings(warmup=1, min_repeats=2, max_repeats=2)
    size = MIN_MATMUL_SIZE
    while size < largest:
        seconds = 2 * size**3 / (matmul_tflops(device, dtype, size, probe) * 1e12)
        # Doubling the size multiplies the work by 8.
        if seconds * 8 > MAX_PRODUCT_S:
            break
        size *= 2
    return size


def matmul_tflops(device: str, dtype: str, size: int, timing: TimingSettings = CALIBRATION_TIMING) -> float:
    """Best rate of one [size, size] x [size, size] product, 2 * size**3 FLOPs, in TFLOP/s."""
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(device, DTYPES[dtype])
    b = torch.randn(size, size, generator=generator).to(device, DTYPES[dtype])
    with torch.no_grad():
        measurement = measure_latency(lambda: torch.mm(a, b), device, timing)
    return 2 * size**3 / measurement.min_s / 1e12


def copy_gb_per_s(device: str, nbytes: int) -> float:
    """Best rate of copying ``nbytes`` into another buffer on ``device``, counting the read and the write."""
    source = torch.ones(nbytes, dtype=torch.uint8, device=device)
    target = torch.empty_like(source)
    measurement = measure_latency(lambda: target.copy_(source), device, CALIBRATION_TIMING)
    return 2 * nbytes / measurement.min_s / 1e9


def calibrations_for(devices: list[str], threads: int | None = None) -> dict[str, Calibration]:
    """Cached calibrations of ``devices``, leaving out those never calibrated on this hardware."""
    found = {}
    for device in devices:
        calibration = load_cached(device, threads) if unavailable_reason(device) is None else None
        if calibration is None:
            logger.info("no calibration cached for %s; run meobench calibrate to get pct_of_peak", device)
        else:
            found[device] = calibration
    return found
