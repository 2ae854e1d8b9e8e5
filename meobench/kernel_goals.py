"""Latency goals for the MEO and MoE strategies, checked on the rows of one run's results.

Each goal is a ratio of two latencies measured in the same case group (same
weights, inputs and run), so machine speed cancels out and only load noise stays:

1. MEO-sequence at most ``MEO_OVER_DENSE_MAX`` times the dense linear's latency.
2. For top_k >= 2, MEO-sequence's speedup over the fastest MoE row of the group
   at least ``SPEEDUP_SHARE_MIN`` of the analytic FLOP ratio k*L / (k + L):
   MoE does k*L*F*D multiply-adds per sequence of L tokens, MEO k*F*D to merge
   plus L*F*D to apply. Padding is ignored, so the ratio holds for unpadded runs.
3. The ``grouped`` MoE strategy at most ``GROUPED_OVER_K_DENSE_MAX`` times
   k times the dense latency, at token and at sequence level.

scenarios/kernels.yaml measures every row these goals read.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from meobench.cases import GROUP_KEYS
from meobench.errors import MeobenchError

MEO_OVER_DENSE_MAX = 1.25
SPEEDUP_SHARE_MIN = 0.8
GROUPED_OVER_K_DENSE_MAX = 1.2
MOE_VARIANTS = ("moe-token", "moe-sequence")


@dataclass(frozen=True)
class GoalCheck:
    """One goal evaluated on one case group."""

    goal: str
    """Short name of the goal."""
    top_k: int
    measured: float
    """The measured ratio; for the speedup goal, speedup divided by the analytic FLOP ratio."""
    limit: float
    """Bound on ``measured``: an upper bound unless ``at_least``."""
    at_least: bool
    detail: str
    """The latencies behind the ratio, in milliseconds."""

    @property
    def passed(self) -> bool:
        return self.measured >= self.limit if self.at_least else self.measured <= self.limit


def analytic_flop_ratio(top_k: int, seq_len: int) -> float:
    """MoE over MEO multiply-adds for one sequence of seq_len tokens: k*L / (k + L)."""
    return top_k * seq_len / (top_k + seq_len)


def check_kernel_goals(frame: pd.DataFrame, meo_strategy: str = "auto") -> list[GoalCheck]:
    """Evaluate every goal on every case group of a results.csv frame.

    ``meo_strategy`` names the meo-sequence rows the MEO goals read: ``auto``,
    the strategy that picks per call, unless the caller names another. Raises MeobenchError when a row a goal needs
    is missing or did not finish with status ok.
    """
    checks: list[GoalCheck] = []
    for _, group in frame.groupby(list(GROUP_KEYS), sort=True):
        checks.extend(_check_group(group, meo_strategy))
    if not checks:
        raise MeobenchError("the results contain no case group; run scenarios/kernels.yaml and pass its results.csv.")
    return checks


def _check_group(group: pd.DataFrame, meo_strategy: str) -> list[GoalCheck]:
    top_k, seq_len = int(group["top_k"].iloc[0]), int(group["seq_len"].iloc[0])
    dense_ms = _latency_ms(group, "dense", "none")
    meo_ms = _latency_ms(group, "meo-sequence", meo_strategy)
    checks = [
        GoalCheck(
            goal="MEO-sequence / dense",
            top_k=top_k,
            measured=meo_ms / dense_ms,
            limit=MEO_OVER_DENSE_MAX,
            at_least=False,
            detail=f"meo-sequence {meo_strategy} {meo_ms:.1f} ms, dense {dense_ms:.1f} ms",
        )
    ]

    if top_k >= 2:
        moe_rows = group[group["variant"].isin(MOE_VARIANTS) & (group["status"] == "ok")]
        if moe_rows.empty:
            raise MeobenchError(f"no MoE row finished for top_k={top_k}; the speedup goal needs moe-token or moe-sequence.")
        fastest = moe_rows.loc[moe_rows["latency_ms_median"].idxmin()]
        ratio = analytic_flop_ratio(top_k, seq_len)
        speedup = fastest["latency_ms_median"] / meo_ms
        checks.append(
            GoalCheck(
                goal="MEO speedup / FLOP ratio",
                top_k=top_k,
                measured=speedup / ratio,
                limit=SPEEDUP_SHARE_MIN,
                at_least=True,
                detail=f"speedup {speedup:.2f}x over {fastest['variant']} {fastest['strategy']} "
                f"{fastest['latency_ms_median']:.1f} ms; FLOP ratio {ratio:.2f}",
            )
        )

    for variant in MOE_VARIANTS:
        grouped_ms = _latency_ms(group, variant, "grouped")
        checks.append(
            GoalCheck(
                goal=f"{variant} grouped / (k x dense)",
                top_k=top_k,
                measured=grouped_ms / (top_k * dense_ms),
                limit=GROUPED_OVER_K_DENSE_MAX,
                at_least=False,
                detail=f"grouped {grouped_ms:.1f} ms, {top_k} x dense {top_k * dense_ms:.1f} ms",
            )
        )
    return checks


def _latency_ms(group: pd.DataFrame, variant: str, strategy: str) -> float:
    rows = group[(group["variant"] == variant) & (group["strategy"] == strategy)]
    top_k = int(group["top_k"].iloc[0])
    if rows.empty:
        raise MeobenchError(
            f"no {variant} row with strategy {strategy!r} for top_k={top_k}; "
            "run a scenario that includes it, such as scenarios/kernels.yaml."
        )
    row = rows.iloc[0]
    if row["status"] != "ok":
        raise MeobenchError(f"{variant} {strategy} for top_k={top_k} has status {row['status']!r}: {row['error']}")
    return float(row["latency_ms_median"])
