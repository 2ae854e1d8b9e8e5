"""``meobench calibrate``: measure and cache a device's matrix-product peak and copy bandwidth."""

from __future__ import annotations

from typing import Optional

import torch
import typer
from rich.table import Table

from meobench import calibrate as calibration_module
from meobench.cli.common import app, check_device, console, reports_errors
from meobench.devices import resolve_device


@app.command()
@reports_errors
def calibrate(
    device: str = typer.Option("auto", "--device", "-d", help="Device to measure: auto, cpu, cuda, cuda:N or mps."),
    force: bool = typer.Option(False, "--force", help="Measure again even when a calibration is cached."),
    threads: Optional[int] = typer.Option(
        None, "--threads", min=1, help="torch intra-op threads to measure with; match the scenario's threads."
    ),
) -> None:
    """Measure the device's matrix-product peak per dtype and its copy bandwidth, cached per device fingerprint."""
    check_device(device)
    device = resolve_device(device)
    if threads:
        torch.set_num_threads(threads)
    cached = None if force else calibration_module.load_cached(device)
    calibration = cached or calibration_module.measure(device)
    path = (
        calibration_module.save(calibration)
        if cached is None
        else calibration_module.cache_path(calibration.fingerprint)
    )

    source = "cached" if cached else "measured now"
    table = Table(title=f"{device}: {calibration.fingerprint.get('name')} ({source}, {calibration.measured_utc})")
    for header in ("dtype", "matrix size", "matmul peak (TFLOP/s)", "ridge (FLOP/byte)"):
        table.add_column(header, justify="right")
    ridge = calibration.ridge_flop_per_byte
    for dtype, tflops in calibration.matmul_tflops.items():
        table.add_row(dtype, str(calibration.matmul_size[dtype]), f"{tflops:.3g}", f"{ridge[dtype]:.3g}")
    for dtype, reason in calibration.skipped_dtypes.items():
        table.add_row(dtype, "-", "-", "-", style="yellow")
        console.print(f"[yellow]{dtype} skipped:[/] {reason}", highlight=False)
    console.print(table)
    console.print(
        f"Copy bandwidth: {calibration.copy_gb_per_s:.3g} GB/s (read + write of {calibration.copy_bytes / 2**20:.0f} MiB). "
        f"Cache: {path}",
        highlight=False,
    )
