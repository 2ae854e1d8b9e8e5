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
from meobench.layers.experts import ExpertBank, StackedLinear
from meobench.layers.router import Router, Routing
from meobench.registry import Registry

MoEStrategy = Callable[[ExpertBank, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
MOE_STRATEGIES: Registry[MoEStrategy] = Registry("MoE strategy")
register_strategy = MOE_STRATEGIES.register

# Dtypes torch._grouped_mm accepts on CPU (torch 2.13.0).
GROUPED_MM_CPU_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


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

    def combine(self, expert_out: torch.Tensor, num_tokens: int) -> torch.Tensor:
        """Scale sorted expert outputs [T*K, F] by their gates in place and sum them per token -> [T, F].

        With K = 1 every token has exactly one pair, so its row is copied rather than
        added to a zero-filled output.
        """
        expert_out.mul_(self.gate_of_slot)
        if expert_out.shape[0] == num_tokens:
            return expert_out.new_empty(num_tokens, expert_out.shape[1]).index_copy_(0, self.token_of_slot, expert_out)
        out = expert_out.new_zeros(num_tokens, expert_out.shape[1])
        return out.index_add_(0, self.token_of_slot, expert_out)


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

    Uses torch._grouped_mm where ``grouped_mm_unsupported_reason`` finds none,
    else one matrix product per segment.
    """
    with record_function("dispatch"):
        pairs = dispatch(weights, indices, bank.num_experts)
        hidden = x[pairs.token_of_slot]  # [T*K, D]
    with record_function("expert"):
        for position, linear in enumerate(bank.linears):
            if position > 0:
                hidden = bank.activation(hidden)
            hidden = grouped_linear(hidden, linear, pairs)
    with record_function("combine"):
        return pairs.combine(hidden, x.shape[0])


def grouped_linear(hidden: torch.Tensor, linear: StackedLinear, pairs: Dispatch) -> torch.Tensor:
    """Apply expert e of ``linear`` to segment e of the sorted rows hidden [T*K, D] -> [T*K, F]."""
    if grouped_mm_unsupported_reason(hidden, linear.weight) is None:
        ends = torch.tensor(pairs.counts, device=hidden.device).cumsum(0).to(torch.int32)
        out = torch._grouped_mm(hidden, linear.weight.transpose(1, 2), offs=ends)
        if linear.bias is not None:
            # One in-place add per segment, so no [T*K, F] copy of the biases is made.
            for expert, start, stop in pairs.segments():
                out[start:stop] += linear.bias[expert]
        return out

    pieces = []
    for expert, start, stop in pairs.segments():
        pieces.append(linear.forward_expert(expert, hidden[start:stop]))
    if not pieces:
        return hidden.new_zeros(0, linear.weight.shape[1])
    return torch.cat(pieces)


def grouped_mm_unsupported_reason(hidden: torch.Tensor, weight: torch.Tensor) -> str | None:
    """Why torch._grouped_mm cannot compute hidden [T*K, D] times weight [E, F, D] here, or None.

    Checked on torch 2.13.0 CPU: float32, bfloat16 and float16 run, float64 is
    rejected, and the backward pass fails, so autograd uses the per-segment path.
    NOTE: the CUDA conditions (bfloat16, compute capability 9.0 or newer, rows
    aligned to 16 bytes) follow the kernel's documented limits and have not been
    run on a GPU.
    """
    if not hasattr(torch, "_grouped_mm"):
        return f"torch {torch.__version__} has no torch._grouped_mm"
    if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
        return "torch._grouped_mm has no CPU backward pass"
    if hidden.device.type == "cpu":
        if hidden.dtype not in GROUPED_MM_CPU_DTYPES:
            return f"torch._grouped_mm on CPU does not take {hidden.dtype}"
        return None
    if hidden.device.type == "cuda":
        if hidden.dtype != torch.bfloat16:
            return f"torch._grouped_mm on CUDA is used only for bfloat16, not {hidden.dtype}"
        if torch.cuda.get_device_capability(hidden.device) < (9, 0):
            return "torch._grouped_mm needs CUDA compute capability 9.0 or newer"
        row_bytes = (weight.shape[1] * weight.element_size(), weight.shape[2] * weight.element_size())
        if any(size % 16 for size in row_bytes):
            return f"torch._grouped_mm needs rows aligned to 16 bytes, got widths {tuple(weight.shape[1:])}"
        return None
    return f"torch._grouped_mm is not used on {hidden.device.type}"


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
