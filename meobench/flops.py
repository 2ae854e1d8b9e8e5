"""FLOP counting with torch.utils.flop_counter.FlopCounterMode.

Convention: one multiply-add counts as 2 FLOPs (FlopCounterMode's convention).
FlopCounterMode counts matrix products and convolutions; elementwise work
(bias, activation, gate scaling) and routing ops (topk, scatter, index_add) are
not counted. meobench registers formulas for the ops it does not know:
torch._grouped_mm, the CPU flash-attention kernel and meobench::grouped_linear.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode, flop_registry, register_flop_formula, sdpa_flop_count

from meobench.errors import MeobenchError
from meobench.layers.grouped_kernel import grouped_linear_flops


def grouped_mm_flops(a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of torch._grouped_mm, which FlopCounterMode in torch 2.13.0 does not count.

    The groups may split the rows (a [M, K] with b [G, K, N]) or be batched
    (a [G, M, K] with b [G, K, N]). Then every output element is one dot product
    of length K: 2 * out.numel() * K. When they split K (a [M, K] with b [K, N],
    out [G, M, N]), the segments' lengths sum to K: 2 * M * N * K.
    """
    inner = a_shape[-1]
    if len(a_shape) == 2 and len(b_shape) == 2:
        return 2 * a_shape[0] * b_shape[1] * inner
    return 2 * math.prod(out_shape) * inner


if hasattr(torch.ops.aten, "_grouped_mm") and torch.ops.aten._grouped_mm not in flop_registry:
    register_flop_formula(torch.ops.aten._grouped_mm)(grouped_mm_flops)


if torch.ops.meobench.grouped_linear not in flop_registry:
    register_flop_formula(torch.ops.meobench.grouped_linear)(grouped_linear_flops)


def cpu_flash_attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of QK^T and AV in the CPU flash-attention kernel, which FlopCounterMode in torch 2.13.0 does not count.

    Scaled dot-product attention on the CPU (the transformers models' default)
    dispatches to it, so without this formula their attention scores count 0.
    """
    return sdpa_flop_count(query_shape, key_shape, value_shape)


_CPU_FLASH_ATTENTION = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
if _CPU_FLASH_ATTENTION is not None and _CPU_FLASH_ATTENTION not in flop_registry:
    register_flop_formula(_CPU_FLASH_ATTENTION)(cpu_flash_attention_flops)


def count_flops(function: Callable[[], object]) -> int:
    """FLOPs of one call of ``function``, counted by a fresh FlopCounterMode.

    NOTE: FlopCounterMode has been reported to count 0 under torch.inference_mode;
    torch 2.13 counts correctly there, but older releases that pyproject.toml allows
    may not. Callers use torch.no_grad for inference, and this function raises inside
    inference mode so that a count never depends on the installed release.
    """
    if torch.is_inference_mode_enabled():
        raise MeobenchError(
            "count_flops was called under torch.inference_mode, where FlopCounterMode counts 0; "
            "use torch.no_grad instead."
        )
    counter = FlopCounterMode(display=False)
    with counter:
        function()
    return counter.get_total_flops()
