"""FLOP counting with torch.utils.flop_counter.FlopCounterMode.

Convention: one multiply-add counts as 2 FLOPs (FlopCounterMode's convention).
FlopCounterMode counts matrix products and convolutions; elementwise work
(bias, activation, gate scaling) and routing ops (topk, scatter, index_add) are
not counted.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from meobench.errors import MeobenchError


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
