"""Vanilla Mixture-of-Experts layer with pluggable execution strategies.

Shape legend: B sequences, L tokens per sequence, T = B*L tokens, D d_model,
F d_out, E experts, K top_k.

A strategy takes the bank, the tokens x [T, D] and per-token gate values and
expert indices [T, K], and returns y [T, F] = sum_k weights[t, k] * E_{indices[t, k]}(x[t]).
Register a new one with ``@register_strategy("name")``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch.profiler import record_function

from meobench.layers.base import RoutedLayer
from meobench.layers.experts import ExpertBank
from meobench.layers.grouped_kernel import grouped_linear
from meobench.layers.router import Router, Routing
from meobench.registry import Registry

MoEStrategy = Callable[[ExpertBank, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
MOE_STRATEGIES: Registry[MoEStrategy] = Registry("MoE strategy")
register_strategy = MOE_STRATEGIES.register


@dataclass(frozen=True)
class Dispatch:
    """(token, slot) pairs sorted by expert, so each expert's pairs form one contiguous segment."""

    token_of_slot: torch.Tensor
    """[T*K] token index of each sorted pair."""
    gate_of_slot: torch.Tensor
    """[T*K, 1] gate value of each sorted pair."""
    expert_of_slot: torch.Tensor
    """[T*K] expert index of each sorted pair, non-decreasing."""
    counts: list[int]
    """Pairs routed to each expert [E]; segment e starts at sum(counts[:e])."""

    def segments(self) -> Iterator[tuple[int, int, int]]:
        """Yield (expert, start, stop) for every expert with at least one pair."""
        start = 0
        for expert, count in enumerate(self.counts):
            if count:
                yield expert, start, start + count
            start += count


def dispatch(weights: torch.Tensor, indices: torch.Tensor, num_experts: int) -> Dispatch:
    """Sort the (token, slot) pairs of gate values and expert indices [T, K] by expert."""
    k = indices.shape[1]
    flat_experts = indices.reshape(-1)  # [T*K]
    order = torch.argsort(flat_experts, stable=True)
    return Dispatch(
        token_of_slot=order // k,
        gate_of_slot=weights.reshape(-1)[order].unsqueeze(-1),
        expert_of_slot=flat_experts[order],
        counts=torch.bincount(flat_experts, minlength=num_experts).tolist(),
    )


@register_strategy("loop")
def run_loop(bank: ExpertBank, x: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Sparse dispatch: sort (token, slot) pairs by expert, run each expert on its tokens, scatter-add back."""
    with record_function("dispatch"):
        pairs = dispatch(weights, indices, bank.num_experts)

    out = x.new_zeros(x.shape[0], bank.config.d_out)
    for expert, start, stop in pairs.segments():
        tokens = pairs.token_of_slot[start:stop]
        with record_function("expert"):
            expert_out = bank.forward_expert(expert, x[tokens])  # [count, F]
        with record_function("combine"):
            out.index_add_(0, tokens, expert_out * pairs.gate_of_slot[start:stop])
    return out


@register_strategy("grouped")
def run_grouped(bank: ExpertBank, x: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Sort (token, slot) pairs by expert and run each matrix as one grouped product over the segments.

    Each matrix runs meobench::grouped_linear with one group per expert: the first
    gathers its rows through the sorted tokens, and the last scales by the gates
    and sums each token's K rows into its output row, so no sorted copy of the
    input or the output is made. Where the compiled kernel cannot run, the op
    uses torch._grouped_mm or one product per segment (meobench.layers.grouped_kernel).
    """
    with record_function("dispatch"):
        pairs = dispatch(weights, indices, bank.num_experts)
        offsets = torch.tensor([0, *pairs.counts]).cumsum(0)
        experts = torch.arange(bank.num_experts).unsqueeze(1)
    hidden = x
    last = len(bank.linears) - 1
    with record_function("expert"):
        for position, linear in enumerate(bank.linears):
            if position > 0:
                hidden = bank.activation(hidden)
            hidden = grouped_linear(
                hidden, linear.weight, linear.bias, offsets, experts,
                x_rows=pairs.token_of_slot if position == 0 else None,
                row_scale=pairs.gate_of_slot.squeeze(-1) if position == last else None,
                out_rows=pairs.token_of_slot if position == last else None,
                out_count=x.shape[0] if position == last else None,
            )  # fmt: skip
    return hidden


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
