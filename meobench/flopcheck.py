"""Count one case's FLOPs with every counter and check each against the analytic cost model.

FlopCounterMode, fvcore and the torch profiler each run once, on a fresh
counter, inside a fresh ShapeOnlyMode, so counting a batch-32 case costs
milliseconds and its result does not depend on earlier cases. Each counter is
compared with the analytic count of the op classes it covers. ``check`` is
``ok`` when all agree within CHECK_TOLERANCE, and otherwise names each disagreement.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch

from meobench.costmodel import CaseShape, CostModel, NoCostModelError, layer_cost, meo_breakeven_seq_len
from meobench.counters import PROFILER_ELEMENTWISE_OPS, FvcoreCount, count_fvcore, count_profiler
from meobench.flops import count_flops
from meobench.layers.config import LayerConfig
from meobench.layers.variants import reference_variant, variant_spec
from meobench.shape_only import OpTally, ShapeOnlyMode

logger = logging.getLogger(__name__)

# Largest relative difference between a counter and the analytic model that still reads as ``ok``.
CHECK_TOLERANCE = 0.01


@dataclass
class FlopReport:
    """Every FLOP figure of one case, in FLOPs with a multiply-add counted as 2."""

    cost: CostModel | None
    """Analytic model; None in train mode, which it does not cover."""
    flop_counter: int
    """FlopCounterMode count."""
    fvcore: FvcoreCount | None = None
    profiler: int | None = None
    check: str = ""
    """``ok``, or the disagreements in a few words."""
    uncounted_ops: dict[str, OpTally] = field(default_factory=dict)
    """Routing ops that no counter counts: calls and elements produced, by aten name."""
    meo_to_moe_flop_ratio: float | None = None
    """Analytic FLOPs of this MEO case over those of MoE at the same routing level (``loop``)."""
    meo_breakeven_seq_len: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "cost_model": self.cost.to_json() if self.cost else None,
            "fvcore_unsupported_ops": self.fvcore.unsupported_ops if self.fvcore else {},
            "uncounted_ops": [
                {"op": name, "calls": tally.calls, "elements": tally.elements}
                for name, tally in sorted(self.uncounted_ops.items())
            ],
            "meo_to_moe_flop_ratio": self.meo_to_moe_flop_ratio,
            "meo_breakeven_seq_len": self.meo_breakeven_seq_len,
        }


def count_case(
    module: torch.nn.Module,
    inputs: tuple[Any, ...],
    config: LayerConfig,
    variant: str,
    strategy: str,
    shape: CaseShape,
) -> FlopReport:
    """Count ``module(*inputs)`` (an inference forward pass) with all three counters and check them
    against the analytic cost of ``variant`` run with ``strategy`` at ``shape``."""
    try:
        cost = layer_cost(config, variant, strategy, shape)
    except NoCostModelError as error:
        # A strategy registered outside meobench still gets its FlopCounterMode count.
        with _single_thread(), ShapeOnlyMode(), torch.no_grad():
            report = FlopReport(None, count_flops(lambda: module(*inputs)))
        report.check = f"not checked: {error}"
        return report
    with _single_thread(), ShapeOnlyMode() as mode, torch.no_grad():
        report = FlopReport(cost, count_flops(lambda: module(*inputs)))
    report.uncounted_ops = dict(mode.routing_ops)

    problems = []
    try:
        with _single_thread(), ShapeOnlyMode(), torch.no_grad():
            report.fvcore = count_fvcore(module, inputs)
    except Exception as error:  # noqa: BLE001 - a failing second counter must not fail the case
        logger.warning("fvcore could not count %s: %s", variant, error)
        problems.append(f"fvcore: failed ({type(error).__name__})")
    try:
        with _single_thread(), ShapeOnlyMode(), torch.no_grad():
            report.profiler = count_profiler(lambda: module(*inputs))
    except Exception as error:  # noqa: BLE001
        logger.warning("the profiler could not count %s: %s", variant, error)
        problems.append(f"profiler: failed ({type(error).__name__})")

    problems = _disagreements(report) + problems
    report.check = "; ".join(problems) or "ok"
    if variant_spec(variant).family == "meo":
        reference = layer_cost(config, reference_variant(variant), "loop", shape)
        report.meo_to_moe_flop_ratio = cost.flops / reference.flops
        report.meo_breakeven_seq_len = meo_breakeven_seq_len(config, strategy)
    return report


@contextlib.contextmanager
def _single_thread() -> Iterator[None]:
    """Run torch ops on one thread, then restore the thread count.

    The ops that still run under ShapeOnlyMode (routing, zero fills) are small, and on a
    loaded machine waiting for a second thread costs more than it saves.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def expected_profiler_flops(cost: CostModel) -> int:
    """Return the FLOPs the torch profiler should report: aten matmul FLOPs plus each add's and mul's first operand."""
    elementwise = sum(term.first_operand_elements for term in cost.elementwise if term.op in PROFILER_ELEMENTWISE_OPS)
    return cost.aten_matmul_flops + elementwise


def _disagreements(report: FlopReport) -> list[str]:
    cost = report.cost
    problems = []
    figures = [("FlopCounterMode", report.flop_counter, cost.matmul_flops)]
    if report.fvcore is not None:
        figures.append(("fvcore", report.fvcore.flops, cost.matmul_flops))
    if report.profiler is not None:
        figures.append(("profiler", report.profiler, expected_profiler_flops(cost)))
    for name, counted, expected in figures:
        if relative_difference(counted, expected) <= CHECK_TOLERANCE:
            continue
        problem = f"{name}: {counted:.4g} vs analytic {expected:.4g}"
        if name == "fvcore" and report.fvcore.unsupported_ops:
            problem += ", unsupported op " + ", ".join(sorted(report.fvcore.unsupported_ops))
        problems.append(problem)
    return problems


def relative_difference(counted: float, expected: float) -> float:
    """|counted - expected| / expected; 0 when both are 0, infinite when only ``expected`` is."""
    if expected == 0:
        return 0.0 if counted == 0 else float("inf")
    return abs(counted - expected) / expected
