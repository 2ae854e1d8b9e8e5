"""The performance gate: does a current run regress against a baseline run of the same scenario?

Deterministic metrics (FLOPs, parameters) must match exactly. Latency is judged
per case on the raw samples: it regresses only when the median ratio exceeds the
threshold, the median grew by more than an absolute floor, and a two-sided
Mann-Whitney U test finds the two samples different at level ``alpha``.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any, Sequence

from scipy.stats import mannwhitneyu

from meobench.compare import check_comparable, join_keys
from meobench.errors import MeobenchError
from meobench.runs import CASE_KEY, Run, case_key

# Outcomes of one check, from best to worst; ``mismatch`` is a deterministic metric that changed.
OUTCOMES = ("improvement", "pass", "ambiguous", "regression", "mismatch")
FAILING_OUTCOMES = ("regression", "mismatch")
# Metrics that must be equal in both runs; FLOPs as the integer count, not rounded gflops.
DETERMINISTIC_METRICS = ("flops", "params", "active_params")
# Exit statuses of ``meobench gate``.
EXIT_PASS = 0
EXIT_REGRESSION = 1
EXIT_NOT_COMPARABLE = 2


class NotComparableError(MeobenchError):
    """The baseline and current runs measured different things or ran on different hardware."""

    exit_code = EXIT_NOT_COMPARABLE


@dataclass(frozen=True)
class GateSettings:
    max_latency_regression: float = 0.10
    """Largest tolerated rise of the median latency, as a fraction of the baseline median."""
    latency_floor_ms: float = 0.05
    """Median changes smaller than this, in milliseconds, are never a regression or an improvement."""
    alpha: float = 0.05
    """Significance level of the two-sided Mann-Whitney U test."""

    @classmethod
    def from_scenario(cls, scenario: dict[str, Any]) -> GateSettings:
        """Read the ``gates`` section of a dumped scenario; absent keys keep the defaults."""
        gates = scenario.get("gates") or {}
        defaults = cls()
        return cls(
            max_latency_regression=(gates.get("max_regression") or {}).get("latency", defaults.max_latency_regression),
            latency_floor_ms=gates.get("latency_floor_ms", defaults.latency_floor_ms),
            alpha=gates.get("alpha", defaults.alpha),
        )


@dataclass(frozen=True)
class Check:
    """The verdict on one metric of one case."""

    case_id: str
    metric: str
    outcome: str
    baseline: float | None = None
    current: float | None = None
    ratio: float | None = None
    """current / baseline (of the medians, for latency)."""
    p_value: float | None = None
    reason: str = ""


@dataclass
class GateReport:
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """Differences that did not block the gate, such as changed timing settings."""

    @property
    def failed(self) -> list[Check]:
        return [check for check in self.checks if check.outcome in FAILING_OUTCOMES]

    @property
    def exit_status(self) -> int:
        return EXIT_REGRESSION if self.failed else EXIT_PASS

    def counts(self) -> dict[str, int]:
        """Checks per outcome, in the order of OUTCOMES, leaving out outcomes with none."""
        counts = {outcome: sum(1 for check in self.checks if check.outcome == outcome) for outcome in OUTCOMES}
        return {outcome: count for outcome, count in counts.items() if count}


def gate_runs(baseline: Run, current: Run, settings: GateSettings, latency: bool = True) -> GateReport:
    """Check every case of ``baseline`` against the case with the same parameters in ``current``.

    Raises NotComparableError when the scenarios differ, a run is incomplete, or
    (when ``latency`` is checked) the device fingerprints differ. With ``latency``
    False only the deterministic metrics are checked, so a baseline from other
    hardware can still be used.
    """
    comparability = check_comparable(baseline, current)
    problems = [f"scenario differs: {item}" for item in comparability.scenario]
    problems += comparability.incomplete
    report = GateReport(notes=list(comparability.notes))
    device_notes = [f"device differs: {item}" for item in comparability.devices]
    if latency:
        problems += device_notes
    else:
        report.notes += device_notes
    report.notes += [f"software stack differs: {item}" for item in comparability.stack]
    if problems:
        hint = "Gate complete runs of the same scenario"
        hint += "." if comparability.scenario or comparability.incomplete else ", or pass --only deterministic."
        raise NotComparableError(
            f"{baseline.path} and {current.path} are not comparable:\n  " + "\n  ".join(problems) + f"\n{hint}"
        )

    # Without latency, a CPU baseline may gate a CUDA run, so the device string is a
    # join key only when a run used several devices.
    keys = tuple(join_keys([baseline, current])) if not latency else CASE_KEY
    current_cases = current.cases_by_key(keys)
    for key, base in baseline.cases_by_key(keys).items():
        report.checks += check_case(base, current_cases.get(key), settings, latency)
    new_cases = case_ids_missing(baseline, current, keys)
    if new_cases:
        report.notes.append(
            f"{len(new_cases)} case(s) of the current run are not in the baseline: {', '.join(new_cases)}"
        )
    return report


def check_case(
    baseline: dict[str, Any], current: dict[str, Any] | None, settings: GateSettings, latency: bool = True
) -> list[Check]:
    """Check one case: its status, each deterministic metric and, when ``latency`` is set, its latency."""
    case_id = str(baseline.get("case_id"))
    if current is None:
        return [Check(case_id, "status", "regression", reason="case is missing from the current run")]
    base_status, current_status = baseline.get("status"), current.get("status")
    if base_status != "ok":
        reason = f"not compared: status {base_status} in the baseline, {current_status} in the current run"
        return [Check(case_id, "status", "pass", reason=reason)]
    if current_status != "ok":
        error = current.get("error") or "no error recorded"
        return [Check(case_id, "status", "regression", reason=f"status {current_status}: {error}")]

    checks = [
        _deterministic_check(case_id, metric, baseline.get(metric), current.get(metric))
        for metric in DETERMINISTIC_METRICS
    ]
    if latency:
        checks.append(
            latency_check(
                case_id, baseline.get("latency_samples_s") or [], current.get("latency_samples_s") or [], settings
            )
        )
    return checks


def _deterministic_check(case_id: str, metric: str, baseline: Any, current: Any) -> Check:
    if baseline == current:
        return Check(case_id, metric, "pass", baseline, current, 1.0 if baseline else None)
    return Check(
        case_id, metric, "mismatch", baseline, current,
        reason=f"{metric} changed from {baseline} to {current}; deterministic metrics must match exactly",
    )  # fmt: skip


def latency_check(
    case_id: str, baseline_s: Sequence[float], current_s: Sequence[float], settings: GateSettings
) -> Check:
    """Judge one case's latency from the raw samples of both runs, in seconds; values shown in ms.

    - regression: median ratio above 1 + max_latency_regression, median rise above the
      floor, and Mann-Whitney U p-value below alpha;
    - improvement: median ratio below 1 - max_latency_regression, fall above the floor,
      and p below alpha;
    - ambiguous: the medians moved past the threshold but the test cannot tell the samples apart;
    - pass: the medians did not move past the threshold and the floor.
    """
    if len(baseline_s) < 2 or len(current_s) < 2:
        return Check(case_id, "latency", "ambiguous", reason="fewer than 2 samples in a run; cannot test")
    base_ms = statistics.median(baseline_s) * 1e3
    current_ms = statistics.median(current_s) * 1e3
    ratio = current_ms / base_ms if base_ms > 0 else float("inf")
    change_ms = current_ms - base_ms
    p_value = mann_whitney_p(baseline_s, current_s)
    threshold = settings.max_latency_regression

    slower = ratio > 1 + threshold and change_ms > settings.latency_floor_ms
    faster = ratio < 1 - threshold and -change_ms > settings.latency_floor_ms
    different = p_value < settings.alpha
    if slower or faster:
        direction = "slower" if slower else "faster"
        if different:
            outcome = "regression" if slower else "improvement"
            reason = f"{abs(ratio - 1):.1%} {direction}, p={p_value:.2g} < {settings.alpha}"
        else:
            outcome = "ambiguous"
            reason = f"{abs(ratio - 1):.1%} {direction}, but p={p_value:.2g} >= {settings.alpha}"
    else:
        outcome = "pass"
        reason = f"within {threshold:.0%} or {settings.latency_floor_ms} ms"
    return Check(case_id, "latency", outcome, base_ms, current_ms, ratio, p_value, reason)


def mann_whitney_p(baseline: Sequence[float], current: Sequence[float]) -> float:
    """Two-sided Mann-Whitney U p-value; 1.0 when every sample is equal, where the test is undefined."""
    if len(set(baseline) | set(current)) == 1:
        return 1.0
    return float(mannwhitneyu(current, baseline, alternative="two-sided").pvalue)


def case_ids_missing(baseline: Run, current: Run, keys: tuple[str, ...] = CASE_KEY) -> list[str]:
    """Case ids of the current run that the baseline lacks."""
    known = {case_key(case, keys) for case in baseline.cases}
    return [str(case.get("case_id")) for case in current.cases if case_key(case, keys) not in known]
