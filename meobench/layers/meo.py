"""MEO: merge the selected experts' weights with the gate values, then run one expert.

    W_hat = sum_i G_i W_i,  b_hat = sum_i G_i b_i,  y = W_hat x + b_hat

Shape legend: B sequences, L tokens per sequence, D input width of a matrix,
F its output width, E experts, K top_k.

A MEO strategy runs one stacked linear (weight [E, F, D], bias [E, F] or None)
under a routing with one decision per sequence: x [B, L, D] -> y [B, L, F].
Its merge work runs under the profiler label ``merge`` and its matrix product
with the merged weight under ``expert``. Two kinds register in one registry:

- ``@register_merge("name")`` takes a merge function that returns W_hat
  [B, F, D] and b_hat [B, F] or None; ``apply_merged`` then applies them.
- ``@register_merge_and_apply("name")`` takes a function that does both steps
  itself, as ``fused`` does so that it never writes the full W_hat.
"""

from __future__ import annotations

import functools
from typing import Callable

import torch
from torch.profiler import record_function

from meobench.errors import ConfigError
from meobench.layers.base import RoutedLayer
from meobench.layers.experts import ExpertBank, StackedLinear
from meobench.layers.grouped_kernel import grouped_linear
from meobench.layers.router import Router, Routing
from meobench.layers.token_attention import TokenAttention
from meobench.registry import Registry

Merged = tuple[torch.Tensor, torch.Tensor | None]
MergeFunction = Callable[[StackedLinear, Routing], Merged]
MEOStrategy = Callable[[StackedLinear, Routing, torch.Tensor], torch.Tensor]
MERGE_STRATEGIES: Registry[MEOStrategy] = Registry("merge strategy")
register_merge_and_apply = MERGE_STRATEGIES.register


def register_merge(name: str) -> Callable[[MergeFunction], MergeFunction]:
    """Register a merge function as a strategy that merges, then applies with ``apply_merged``."""

    def decorator(merge: MergeFunction) -> MergeFunction:
        @functools.wraps(merge)
        def merge_then_apply(linear: StackedLinear, routing: Routing, x: torch.Tensor) -> torch.Tensor:
            with record_function("merge"):
                merged = merge(linear, routing)
            with record_function("expert"):
                return apply_merged(x, merged)

        register_merge_and_apply(name)(merge_then_apply)
        return merge

    return decorator


@register_merge("gather")
def merge_gather(linear: StackedLinear, routing: Routing) -> Merged:
    """Select the K experts of each sequence, then take their gate-weighted sum.

    This is what the MEO reference code does; it materialises a [B, K, F, D] copy.
    """
    weights = routing.weights  # [B, K]
    selected = linear.weight[routing.indices]  # [B, K, F, D]
    merged_weight = torch.einsum("bk,bkfd->bfd", weights, selected)
    merged_bias = None
    if linear.bias is not None:
        merged_bias = torch.einsum("bk,bkf->bf", weights, linear.bias[routing.indices])
    return merged_weight, merged_bias


@register_merge("gemm")
def merge_gemm(linear: StackedLinear, routing: Routing) -> Merged:
    """Merge with one matrix product of the dense gate matrix [B, E] and the flattened stack [E, F*D]."""
    num_experts, d_out, d_in = linear.weight.shape
    gates = routing.dense_gates(num_experts)  # [B, E]
    merged_weight = (gates @ linear.weight.reshape(num_experts, d_out * d_in)).view(-1, d_out, d_in)
    merged_bias = None if linear.bias is None else gates @ linear.bias
    return merged_weight, merged_bias


def apply_merged(x: torch.Tensor, merged: Merged) -> torch.Tensor:
    """Apply one merged affine map per sequence: x [B, L, D] -> [B, L, F]."""
    weight, bias = merged
    if bias is None:
        return torch.bmm(x, weight.transpose(1, 2))
    return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))


@register_merge_and_apply("fused")
def run_fused(linear: StackedLinear, routing: Routing, x: torch.Tensor) -> torch.Tensor:
    """Merge and apply in one op, meobench::grouped_linear, so the full merged weight is never written.

    Each sequence is a group of L rows with its K selected experts and gates. On
    the CPU a C kernel merges a few rows of W_hat at a time, only from the K
    selected experts, and uses them at once in the product, where they are still
    in cache; elsewhere the op runs torch ops (meobench.layers.grouped_kernel).
    """
    batch, seq_len, d_in = x.shape
    offsets = torch.arange(0, (batch + 1) * seq_len, seq_len)
    with record_function("expert"):
        y = grouped_linear(
            x.reshape(batch * seq_len, d_in), linear.weight, linear.bias, offsets, routing.indices, routing.weights
        )
    return y.view(batch, seq_len, -1)


def merge_traffic(strategy: str, batch: int, top_k: int, num_experts: int) -> int:
    """Estimated memory traffic of a strategy for one linear, in expert-sized matrices (F*D elements).

    gather reads K experts per sequence, writes and rereads that [B, K, F, D] copy,
    then writes W_hat and rereads it to apply it. gemm reads every expert once and
    writes and rereads W_hat. fused reads each selected expert once (at most B*K
    distinct ones) and keeps its tiles in cache.
    """
    if strategy == "gather":
        return 3 * batch * top_k + 2 * batch
    if strategy == "gemm":
        return num_experts + 2 * batch
    if strategy == "fused":
        return min(num_experts, batch * top_k)
    raise ConfigError(f"merge strategy {strategy!r} has no traffic estimate; use gather, gemm or fused.")


def choose_merge(batch: int, top_k: int, num_experts: int) -> str:
    """Pick the strategy with the least estimated memory traffic; ties go to the earlier of fused, gemm, gather.

    Merging is memory-bound (2 FLOPs per weight element read per sequence), so
    bytes moved, not FLOPs, rank the strategies. Since fused reads only the selected
    experts, it moves the fewest bytes at every shape and is always chosen. The
    choice stays a function of the estimate so that a new strategy competes by it.
    """
    candidates = ("fused", "gemm", "gather")
    return min(candidates, key=lambda name: merge_traffic(name, batch, top_k, num_experts))


@register_merge_and_apply("auto")
def run_auto(linear: StackedLinear, routing: Routing, x: torch.Tensor) -> torch.Tensor:
    """Choose gather, gemm or fused per call from the shapes, by estimated memory traffic."""
    batch, top_k = routing.indices.shape
    chosen = choose_merge(batch, top_k, linear.num_experts)
    return MERGE_STRATEGIES[chosen](linear, routing, x)


class MEOLayer(RoutedLayer):
    """Sequence-, task- or token-level MEO over a shared expert bank and router.

    ``token`` level runs the token attention block first, then routes and merges
    at sequence level on its output, as token-level MEO is defined.
    """

    def __init__(
        self,
        bank: ExpertBank,
        router: Router,
        level: str,
        merge: str = "gemm",
        token_attention: TokenAttention | None = None,
    ):
        super().__init__()
        MERGE_STRATEGIES.require(merge)
        if level == "token" and token_attention is None:
            raise ConfigError("token-level MEO needs a TokenAttention block; pass token_attention=.")
        self.bank = bank
        self.router = router
        self.level = level
        self.merge = merge
        self.token_attention = token_attention if level == "token" else None

    def route_and_forward(
        self,
        x: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        task_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, Routing]:
        """Return y [B, L, F] and the per-sequence routing decision for x [B, L, D]."""
        routing_level = self.level
        if self.token_attention is not None:
            with record_function("token_attention"):
                x = self.token_attention(x)
            routing_level = "sequence"
        with record_function("router"):
            routing = self.router(x, routing_level, attention_mask, task_ids)
        strategy = MERGE_STRATEGIES[self.merge]
        for position, linear in enumerate(self.bank.linears):
            if position > 0:
                x = self.bank.activation(x)
            x = strategy(linear, routing, x)
        return x, routing
