"""Result rows: one record per case, with the column names every output shares.

Values are stored in base units (seconds, bytes, FLOPs) in ``CaseResult`` and
converted to the columns' display units (ms, MiB, GFLOP) only in ``to_row``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from meobench import roofline
from meobench.cases import GROUP_KEYS, Case, CaseGroup
from meobench.flopcheck import FlopReport
from meobench.profiling import PHASES, ProfileSummary
from meobench.timing import Measurement

# Column order of results.csv; units are in the names.
COLUMNS = (
    "scenario", "case_id", "variant", "strategy", "expert_kind", "num_experts", "top_k", "batch_size",
    "seq_len", "d_model", "d_ff", "dtype", "device", "mode", "params", "active_params", "gflops",
    "latency_ms_median", "latency_ms_iqr", "latency_ms_min", "repeats", "tokens_per_s", "peak_mem_mib",
    "fidelity_rel_err", "speedup_vs_moe", "status", "error",
    "gmacs", "gflops_analytic", "gflops_fvcore", "gflops_profiler", "flops_check", "bytes_min",
    "arithmetic_intensity",
    # Beyond the required set:
    "device_name", "threads", "stop_reason", "peak_mem_method", "warnings",
    # Roofline, against the device's calibrated ceilings (empty when it was never calibrated):
    "achieved_tflops", "pct_of_peak", "peak_bandwidth_gb_s", "bound",
    # Where the time goes (milliseconds per forward pass, from torch.profiler):
    *(f"phase_{phase}_ms" for phase in PHASES), "phase_sum_ms", "phase_gap_ms", "phase_gap_pct", "phase_clock",
    "profiled_call_ms",
    # Training steps, torch.compile:
    "forward_ms_median", "backward_ms_median", "optimizer_ms_median", "compile_s",
    # Memory:
    "peak_mem_abs_mib", "mem_negative_alloc", "mem_model_mib", "mem_model_ratio",
    # Failure details:
    "free_mem_mib",
    # Model preset of a model case; empty for a layer case:
    "model",
)  # fmt: skip

# Columns filled in after the sweep from all results and the device calibration. A result
# rebuilt by ``from_json`` gets them computed again rather than read back.
FILLED_AFTER_SWEEP = ("speedup_vs_moe", "pct_of_peak", "peak_bandwidth_gb_s", "bound")

# ``failed``, ``oom``, ``nan`` and ``timeout`` are the failure statuses of meobench.failures.
STATUSES = ("ok", "skipped", "failed", "oom", "nan", "timeout")


@dataclass
class CaseResult:
    """Everything measured for one case."""

    scenario: str
    case: Case
    mode: str
    status: str = "ok"
    error: str = ""
    device_name: str = ""
    threads: int | None = None
    params: int | None = None
    active_params: int | None = None
    flops: int | None = None
    """FlopCounterMode count for one call, a multiply-add counted as 2."""
    flop_report: FlopReport | None = None
    """Every counter and the analytic model, in inference mode."""
    measurement: Measurement | None = None
    peak_mem_bytes: int | None = None
    peak_mem_method: str = ""
    fidelity_rel_err: float | None = None
    speedup_vs_moe: float | None = None
    """Latency of the reference MoE variant divided by this case's latency; filled in after the sweep."""
    warnings: list[str] = field(default_factory=list)
    peak_tflops: float | None = None
    """Calibrated matrix-product peak of the device for this dtype, in 10^12 FLOP/s."""
    peak_bandwidth_gb_s: float | None = None
    """Calibrated copy bandwidth of the device, reads plus writes, in 10^9 bytes/s."""
    profile: ProfileSummary | None = None
    """Per-phase times and top operators; None when profiling was off or the case did not run."""
    part_medians_s: tuple[float, float, float] | None = None
    """Median forward, backward and optimizer seconds of a training step; None in inference mode."""
    compile_s: float | None = None
    """Seconds of the first call of a torch.compile'd step (compilation plus one run)."""
    peak_mem_abs_bytes: int | None = None
    """Peak memory with weights and inputs included, in bytes."""
    mem_negative_alloc: bool = False
    """The profiler reported more bytes freed than the call allocated (see ``warnings``)."""
    mem_model_bytes: int | None = None
    """Memory the cost model expects (MEO's merged weights), in bytes; None where the model has no estimate."""
    free_mem_bytes: int | None = None
    """CUDA memory free when the case failed with ``oom``; None for other statuses and devices."""
    restored: dict[str, Any] | None = None
    """Record this result was rebuilt from by ``from_json``. It supplies the columns and details
    that are not rebuilt as objects (FLOP report, profile, training-step times); None otherwise."""

    @property
    def tokens(self) -> int:
        return self.case.group.batch_size * self.case.group.seq_len

    @property
    def latency_s(self) -> float | None:
        return self.measurement.median_s if self.measurement else None

    @property
    def forward_s(self) -> float | None:
        """Forward seconds: the forward part of a training step, else the whole latency."""
        return self.part_medians_s[0] if self.part_medians_s else self.latency_s

    def phase_columns(self) -> dict[str, Any]:
        """phase_*_ms columns, and the phase sum compared with the measured forward time."""
        columns: dict[str, Any] = {f"phase_{phase}_ms": None for phase in PHASES}
        for column in ("phase_sum_ms", "phase_gap_ms", "phase_gap_pct", "phase_clock", "profiled_call_ms"):
            columns[column] = None
        if self.profile is None or not self.profile.phase_s:
            return columns
        for phase, seconds in self.profile.phase_s.items():
            columns[f"phase_{phase}_ms"] = seconds * 1e3
        columns["phase_sum_ms"] = self.profile.phase_sum_s * 1e3
        columns["phase_clock"] = self.profile.clock
        columns["profiled_call_ms"] = self.profile.call_s * 1e3
        forward = self.forward_s
        if forward:
            gap = forward - self.profile.phase_sum_s
            columns["phase_gap_ms"] = gap * 1e3
            columns["phase_gap_pct"] = 100 * gap / forward
        return columns

    @property
    def mem_model_ratio(self) -> float | None:
        """Measured activation peak over the cost model's expectation."""
        if self.mem_model_bytes and self.peak_mem_bytes is not None:
            return self.peak_mem_bytes / self.mem_model_bytes
        return None

    def to_row(self) -> dict[str, Any]:
        """Flat record with the CSV columns and display units."""
        m = self.measurement
        params = self.case.params()
        achieved = roofline.achieved_tflops(self.flops, self.latency_s)
        row = {
            "scenario": self.scenario,
            "case_id": self.case.case_id,
            **params,
            "mode": self.mode,
            "params": self.params,
            "active_params": self.active_params,
            "gflops": None if self.flops is None else self.flops / 1e9,
            "latency_ms_median": m.median_s * 1e3 if m else None,
            "latency_ms_iqr": m.iqr_s * 1e3 if m else None,
            "latency_ms_min": m.min_s * 1e3 if m else None,
            "repeats": m.repeats if m else None,
            "tokens_per_s": self.tokens / m.median_s if m and m.median_s > 0 else None,
            "peak_mem_mib": None if self.peak_mem_bytes is None else self.peak_mem_bytes / 2**20,
            "fidelity_rel_err": self.fidelity_rel_err,
            "speedup_vs_moe": self.speedup_vs_moe,
            "status": self.status,
            "error": self.error,
            "device_name": self.device_name,
            "threads": self.threads,
            "stop_reason": m.stop_reason if m else None,
            "peak_mem_method": self.peak_mem_method,
            "warnings": "; ".join(self.warnings),
            "achieved_tflops": achieved,
            "pct_of_peak": roofline.pct_of_peak(achieved, self.peak_tflops),
            "peak_bandwidth_gb_s": self.peak_bandwidth_gb_s,
            **self._flop_columns(),
            **self.phase_columns(),
            "forward_ms_median": self.part_medians_s[0] * 1e3 if self.part_medians_s else None,
            "backward_ms_median": self.part_medians_s[1] * 1e3 if self.part_medians_s else None,
            "optimizer_ms_median": self.part_medians_s[2] * 1e3 if self.part_medians_s else None,
            "compile_s": self.compile_s,
            "peak_mem_abs_mib": None if self.peak_mem_abs_bytes is None else self.peak_mem_abs_bytes / 2**20,
            "mem_negative_alloc": self.mem_negative_alloc,
            "mem_model_mib": None if self.mem_model_bytes is None else self.mem_model_bytes / 2**20,
            "mem_model_ratio": self.mem_model_ratio,
            "free_mem_mib": None if self.free_mem_bytes is None else self.free_mem_bytes / 2**20,
        }
        # arithmetic_intensity comes from the analytic cost model, which covers inference
        # only, so train-mode rows get an empty bound.
        ridge = roofline.ridge_flop_per_byte(self.peak_tflops, self.peak_bandwidth_gb_s)
        row["bound"] = roofline.bound(row.get("arithmetic_intensity"), ridge)
        if self.restored is not None:
            # The stored values are what this code wrote for the same case, including the
            # columns whose source objects (FLOP report, profile) are not rebuilt.
            row.update(
                {column: self.restored[column] for column in COLUMNS if column in self.restored}
                | {column: row[column] for column in FILLED_AFTER_SWEEP}
            )
        return {column: row[column] for column in COLUMNS}

    def _flop_columns(self) -> dict[str, Any]:
        report = self.flop_report
        cost = report.cost if report else None
        fvcore = report.fvcore if report else None
        check = report.check if report else ""
        if not report and self.flops is not None:
            check = "not checked: the analytic model covers inference only"
        return {
            "gmacs": cost.macs / 1e9 if cost else None,
            "gflops_analytic": cost.flops / 1e9 if cost else None,
            "gflops_fvcore": fvcore.flops / 1e9 if fvcore else None,
            "gflops_profiler": report.profiler / 1e9 if report and report.profiler is not None else None,
            "flops_check": check,
            "bytes_min": cost.bytes_min if cost else None,
            "arithmetic_intensity": cost.arithmetic_intensity if cost else None,
        }

    def to_json(self) -> dict[str, Any]:
        """Return the row plus the values in base units that ``from_json`` reads back exactly, and the FLOP details.

        The exact values are the FLOP count, peak and free memory in bytes, the
        warnings as a list and the raw latency samples in seconds.
        """
        record = self.to_row()
        record["flops"] = self.flops
        record["peak_mem_bytes"] = self.peak_mem_bytes
        record["free_mem_bytes"] = self.free_mem_bytes
        record["warning_list"] = list(self.warnings)
        record["latency_samples_s"] = list(self.measurement.samples_s) if self.measurement else []
        record["flops_detail"] = self.flop_report.to_json() if self.flop_report else None
        if self.restored is not None:
            record["flops_detail"] = self.restored.get("flops_detail")
        return record

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> CaseResult:
        """Rebuild a result from a ``to_json`` record; ``speedup_vs_moe`` is left for fill_speedups."""
        # Records written before model cases existed have no "model" key.
        group = CaseGroup(**{key: record[key] for key in GROUP_KEYS}, model=record.get("model"))
        samples = tuple(record.get("latency_samples_s") or ())
        measurement = Measurement(samples, record["stop_reason"]) if samples else None
        return cls(
            scenario=record["scenario"],
            case=Case(group, record["variant"], record["strategy"]),
            mode=record["mode"],
            status=record["status"],
            error=record.get("error") or "",
            device_name=record.get("device_name") or "",
            threads=record.get("threads"),
            params=record.get("params"),
            active_params=record.get("active_params"),
            flops=record.get("flops"),
            measurement=measurement,
            peak_mem_bytes=record.get("peak_mem_bytes"),
            peak_mem_method=record.get("peak_mem_method") or "",
            fidelity_rel_err=record.get("fidelity_rel_err"),
            warnings=list(record.get("warning_list") or ()),
            free_mem_bytes=record.get("free_mem_bytes"),
            restored=record,
        )
