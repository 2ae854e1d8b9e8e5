"""Vanilla Mixture-of-Experts layer with pluggable execution strategies.

Shape legend: B sequences, L tokens per sequence, T = B*L tokens, D d_model,
F d_out, E experts, K top_k.

A strategy takes the bank, the tokens x [T, D] and per-token gate values and
expert indices [T, K], and returns y [T, F] = sum_k weights[t, k] * E_{indices[t, k]}(x[t]).
Register a new one with ``@register_strategy("name")``.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch.profiler import record_function

from meobench.layers.base import RoutedLayer
from meobench.layers.experts import ExpertBank
from meobench.layers.router import Router, Routing
from meobench.registry import Registry

MoEStrategy = Callable[[ExpertBank, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
MOE_STRATEGIES: Registry[MoEStrategy] = Registry("MoE strategy")
register_strategy = MOE_STRATEGIES.register


@register_strategy("loop")
def run_loop(bank: ExpertBank, x: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Sparse dispatch: sort (token, slot) pairs by expert, run each expert on its tokens, scatter-add back."""
    num_tokens, k = indices.shape
    with record_function("dispatch"):
        flat_experts = indices.reshape(-1)  # [T*K]
        order = torch.argsort(flat_experts, stable=True)
        token_of_slot = order // k  # [T*K], token index of each sorted slot
        gate_of_slot = weights.reshape(-1)[order].unsqueeze(-1)  # [T*K, 1]
        counts = torch.bincount(flat_experts, minlength=bank.num_experts).tolist()

    out = x.new_zeros(num_tokens, bank.config.d_out)
    start = 0
    for expert, count in enumerate(counts):
        if count == 0:
            continue
        tokens = token_of_slot[start : start + count]
        with record_function("expert"):
            expert_out = bank.forward_expert(expert, x[tokens])  # [count, F]
        with record_function("combine"):
            out.index_add_(0, tokens, expert_out * gate_of_slot[start : start + count])
        start += count
    return out


@register_strategy("dense")
def run_dense(bank: ExpertBank, x: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Correctness oracle: run every expert on every token and weight by the (mostly zero) gates."""
    with record_function("dispatch"):
        gates = weights.new_zeros(indices.shape[0], bank.num_experts).scatter(1, indices, weights)  # [T, E]
    out = x.new_zeros(x.shape[0], bank.config.d_out)
    for expert in range(bank.num_experts):
        with record_function("expert"):
            expert_out = bank.forward_expert(expert, x)  # [T, F]
        with record_function("combine"):
            out += gates[:, expert : expert + 1] * expert_out
    return out


class MoELayer(RoutedLayer):
    """Routes each token (or each sequence, or each task) to K experts and sums their gated outputs."""

    def __init__(self, bank: ExpertBank, router: Router, level: str, strategy: str = "loop"):
        super().__init__()
        MOE_STRATEGIES.require(strategy)
        self.bank = bank
        self.router = router
        self.level = level
        self.strategy = strategy

    def route_and_forward(
        self,
        x: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        task_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, Routing]:
        """Return y [B, L, F] and the routing decision for x [B, L, D]."""
        batch, seq_len, d_model = x.shape
        with record_function("router"):
            routing = self.router(x, self.level, attention_mask, task_ids)
            weights, indices = routing.weights, routing.indices  # [N, K]
            if self.level != "token":
                # One decision per sequence applies to each of its L tokens.
                weights = weights.repeat_interleave(seq_len, dim=0)
                indices = indices.repeat_interleave(seq_len, dim=0)
        y = MOE_STRATEGIES[self.strategy](self.bank, x.reshape(-1, d_model), weights, indices)
        return y.view(batch, seq_len, -1), routing
