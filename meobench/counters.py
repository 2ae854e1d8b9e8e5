"""Second and third FLOP counters: fvcore's FlopCountAnalysis and the torch profiler.

Every function here returns FLOPs with a multiply-add counted as 2, whatever the
counter's own unit. Each call builds a fresh counter, so nothing accumulates
across cases or repeats. What each counter covers (torch 2.13, fvcore 0.1.5):

- FlopCounterMode (meobench.flops): matrix products (mm, addmm, bmm, baddbmm),
  convolutions and attention kernels. Biases, activations and routing are not counted.
- fvcore: the matrix products it has handles for, plus norms. Its unit is the
  multiply-add. meobench adds handles for ``aten::baddbmm`` and
  ``aten::scaled_dot_product_attention`` (fvcore reports both as unsupported and
  counts 0), and replaces its ``aten::einsum`` handle, which for equations it
  does not recognise calls numpy's einsum_path on full-size float64 arrays.
  meobench also adds handles for ``aten::_grouped_mm`` and ``meobench::grouped_linear``.
- torch profiler (``with_flops=True``): mm, addmm, bmm, baddbmm and conv2d, plus
  ``aten::add`` and ``aten::mul`` counted as the elements of the first operand.
  ``aten::sub``, ``aten::div``, in-place ``add_``/``mul_`` and bias additions
  inside addmm are not counted, nor is any custom op such as ``meobench::grouped_linear``.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch.profiler import ProfilerActivity, profile

from meobench.flops import grouped_mm_flops
from meobench.layers.grouped_kernel import grouped_linear_macs
from meobench.shape_only import SHAPE_ONLY_RANGE

# Ops our layers emit that carry no matmul or norm FLOPs, so fvcore has nothing to count in them.
FVCORE_IGNORED_OPS = (
    "aten::add", "aten::add_", "aten::mul", "aten::mul_", "aten::sub", "aten::div", "aten::sum",
    "aten::mean", "aten::clamp_min", "aten::relu", "aten::gelu", "aten::silu", "aten::softmax",
    "aten::topk", "aten::argsort", "aten::sort", "aten::scatter", "aten::index_add_", "aten::index_copy_",
    "aten::bincount",
    "aten::repeat_interleave", "aten::floor_divide", "aten::new_zeros", "aten::zeros", "aten::zeros_like",
    "aten::to", "aten::unsqueeze", "aten::transpose", "aten::view", "aten::reshape", "aten::slice",
    "aten::select", "aten::index", "aten::embedding", "aten::square", "aten::float", "aten::type_as",
    "profiler::_record_function_enter_new", "profiler::_record_function_exit",
)  # fmt: skip

# Profiler ops whose FLOPs are elementwise, counted from the first operand only.
PROFILER_ELEMENTWISE_OPS = ("aten::add", "aten::mul")


@dataclass(frozen=True)
class FvcoreCount:
    flops: int
    """fvcore's total in FLOPs (its multiply-adds times 2)."""
    unsupported_ops: dict[str, int] = field(default_factory=dict)
    """Ops fvcore has no handle for and that FVCORE_IGNORED_OPS does not list, with their call counts."""


def count_fvcore(module: torch.nn.Module, inputs: tuple[Any, ...]) -> FvcoreCount:
    """Trace ``module(*inputs)`` with a fresh fvcore FlopCountAnalysis and return its total."""
    from fvcore.nn import FlopCountAnalysis

    analysis = FlopCountAnalysis(module, inputs)
    analysis.set_op_handle(
        "aten::baddbmm", _baddbmm_macs,
        "aten::einsum", _einsum_macs,
        "aten::scaled_dot_product_attention", _attention_macs,
        "aten::_grouped_mm", _grouped_mm_macs,
        "meobench::grouped_linear", _grouped_linear_macs,
        **{name: None for name in FVCORE_IGNORED_OPS},
    )  # fmt: skip
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    analysis.tracer_warnings("none")
    with torch.no_grad():
        macs = analysis.total()
    return FvcoreCount(int(round(2 * macs)), dict(analysis.unsupported_ops()))


def count_profiler(function: Callable[[], object]) -> int:
    """Run ``function`` once under a fresh torch profiler with ``with_flops=True`` and sum its FLOPs.

    Events nested in a ShapeOnlyMode meta computation are left out: the op that
    the caller issued was already recorded once, outside that range.
    """
    with profile(activities=[ProfilerActivity.CPU], with_flops=True, record_shapes=True) as profiler:
        function()
    events = list(profiler.profiler.kineto_results.events())
    skipped = sorted((event.start_ns(), event.end_ns()) for event in events if event.name() == SHAPE_ONLY_RANGE)
    starts = [start for start, _ in skipped]
    total = 0
    for event in events:
        flops = event.flops()
        if flops and not _inside(event.start_ns(), event.end_ns(), skipped, starts):
            total += flops
    return total


def _inside(start: int, end: int, ranges: list[tuple[int, int]], starts: list[int]) -> bool:
    """Return whether [start, end] lies in one of the sorted, non-overlapping ``ranges``."""
    index = bisect_right(starts, start) - 1
    return index >= 0 and ranges[index][1] >= end


def _shape(value: Any) -> list[int]:
    from fvcore.nn.jit_handles import get_shape

    return get_shape(value)


def _baddbmm_macs(inputs: list[Any], outputs: list[Any]) -> int:
    """baddbmm(bias, a [b, n, m], c [b, m, p]): b*n*m*p multiply-adds; the bias addition is not counted."""
    batch, rows, inner = _shape(inputs[1])
    columns = _shape(inputs[2])[-1]
    return batch * rows * inner * columns


def _grouped_mm_macs(inputs: list[Any], outputs: list[Any]) -> int:
    """torch._grouped_mm(a, b, offs): the multiply-adds of meobench.flops.grouped_mm_flops, halved."""
    out_shape = _shape(outputs[0])
    return grouped_mm_flops(_shape(inputs[0]), _shape(inputs[1]), out_shape=out_shape) // 2


def _grouped_linear_macs(inputs: list[Any], outputs: list[Any]) -> int:
    """meobench::grouped_linear(x, weight, bias, offsets, experts, gates, x_rows, ...): see grouped_linear_macs."""
    x, weight, bias, _, experts, gates, x_rows = (_shape(value) for value in inputs[:7])
    return grouped_linear_macs(x, weight, bias, experts, gates, x_rows)


def _einsum_macs(inputs: list[Any], outputs: list[Any]) -> int:
    """Multiply-adds of an einsum: the product of the sizes of every index in the equation.

    This is exact for a two-operand equation, which torch runs as one batched
    matrix product. When every summed index has size 1, torch runs an elementwise
    aten::mul instead, and this returns 0 as for any elementwise op. NOTE: for
    three or more operands it is the cost of the naive loop nest, an upper bound
    on what torch's contraction order executes.
    """
    equation = inputs[0].toIValue().replace(" ", "")
    operands = [_shape(value) for value in inputs[1].node().inputs()]
    input_subscripts, arrow, output_subscripts = equation.partition("->")
    if not arrow:
        # Implicit output: the indices that appear exactly once.
        letters = [letter for letter in input_subscripts if letter.isalpha()]
        output_subscripts = "".join(letter for letter in letters if letters.count(letter) == 1)
    sizes: dict[str, int] = {}
    for subscripts, shape in zip(input_subscripts.split(","), operands):
        letters = [letter for letter in subscripts if letter.isalpha()]
        if "..." in subscripts:
            # Leading dimensions covered by the ellipsis act as batch indices.
            broadcast = len(shape) - len(letters)
            for position in range(broadcast):
                sizes[f"...{broadcast - position}"] = max(sizes.get(f"...{broadcast - position}", 1), shape[position])
            shape = shape[broadcast:]
        for letter, size in zip(letters, shape):
            sizes[letter] = max(sizes.get(letter, 1), size)
    summed = [size for letter, size in sizes.items() if len(letter) == 1 and letter not in output_subscripts]
    if math.prod(summed) == 1:
        return 0
    return math.prod(sizes.values())


def _attention_macs(inputs: list[Any], outputs: list[Any]) -> int:
    """scaled_dot_product_attention: q k^T and the weighted sum of v, both batch x L_q x L_k x width.

    NOTE: the causal mask is ignored (FlopCounterMode does the same), so a causal
    call is counted as full attention. Softmax and scaling are not counted.
    """
    query, key, value = (_shape(inputs[position]) for position in range(3))
    batch = math.prod(query[:-2])
    query_len, width = query[-2], query[-1]
    key_len, value_width = key[-2], value[-1]
    return batch * query_len * key_len * (width + value_width)
