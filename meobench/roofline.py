"""Roofline position of a case: achieved rate, share of the device's peak, and what bounds it.

The ceilings come from meobench.calibrate. A case is memory-bound when its
arithmetic intensity (FLOPs per byte moved) is below the device's ridge point,
peak FLOP/s divided by copy bandwidth, and compute-bound otherwise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # meobench.results imports this module
    from meobench.calibrate import Calibration
    from meobench.results import CaseResult


def achieved_tflops(flops: int | None, latency_s: float | None) -> float | None:
    """FLOPs per second of one call, in 10^12 FLOP/s."""
    if not flops or not latency_s:
        return None
    return flops / latency_s / 1e12


def pct_of_peak(achieved: float | None, peak_tflops: float | None) -> float | None:
    """Achieved rate as a percentage of the measured matrix-product peak."""
    if achieved is None or not peak_tflops:
        return None
    return 100 * achieved / peak_tflops


def ridge_flop_per_byte(peak_tflops: float | None, bandwidth_gb_s: float | None) -> float | None:
    """Arithmetic intensity where the roofline turns from memory- to compute-bound: peak FLOP/s over bytes/s."""
    if not peak_tflops or not bandwidth_gb_s:
        return None
    return peak_tflops * 1e12 / (bandwidth_gb_s * 1e9)


def bound(intensity_flop_per_byte: float | None, ridge_flop_per_byte: float | None) -> str:
    """``compute`` or ``memory``, or empty when the intensity or the ridge point is unknown."""
    if intensity_flop_per_byte is None or ridge_flop_per_byte is None:
        return ""
    return "compute" if intensity_flop_per_byte >= ridge_flop_per_byte else "memory"


def fill_roofline(results: list[CaseResult], calibrations: dict[str, Calibration]) -> None:
    """Give each measured case its device's calibrated peak for its dtype and copy bandwidth."""
    for result in results:
        calibration = calibrations.get(result.case.group.device)
        if calibration is None or result.status != "ok":
            continue
        dtype = result.case.group.dtype
        result.peak_tflops = calibration.matmul_tflops.get(dtype)
        result.peak_bandwidth_gb_s = calibration.copy_gb_per_s
        share = pct_of_peak(achieved_tflops(result.flops, result.latency_s), result.peak_tflops)
        if share is not None and share > 100:
            result.warnings.append(
                f"{share:.0f}% of the calibrated {dtype} peak; the calibration is too low "
                "(measured under load?), so rerun meobench calibrate --force"
            )
