"""MEO: merge the selected experts' weights with the gate values, then run one expert.

    W_hat = sum_i G_i W_i,  b_hat = sum_i G_i b_i,  y = W_hat x + b_hat

Shape legend: B sequences, L tokens per sequence, D input width of a matrix,
F its output width, E experts, K top_k.

A merge strategy takes one stacked linear (weight [E, F, D], bias [E, F] or None)
and a routing with one decision per sequence, and returns W_hat [B, F, D] and
b_hat [B, F] or None. Register a new one with ``@register_merge("name")``.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch.profiler import record_function

from meobench.errors import ConfigError
from meobench.layers.base import RoutedLayer
from meobench.layers.experts import ExpertBank, StackedLinear
from meobench.layers.router import Router, Routing
from meobench.layers.token_attention import TokenAttention
from meobench.registry import Registry

Merged = tuple[torch.Tensor, torch.Tensor | None]
MergeStrategy = Callable[[StackedLinear, Routing], Merged]
MERGE_STRATEGIES: Registry[MergeStrategy] = Registry("merge strategy")
register_merge = MERGE_STRATEGIES.register


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
        with record_function("merge"):
            merged = [MERGE_STRATEGIES[self.merge](linear, routing) for linear in self.bank.linears]
        with record_function("expert"):
            for position, merged_linear in enumerate(merged):
                if position > 0:
                    x = self.bank.activation(x)
                x = apply_merged(x, merged_linear)
        return x, routing
