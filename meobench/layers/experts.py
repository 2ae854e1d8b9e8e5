"""The expert bank: n experts stored as stacked weight tensors.

Shape legend: E experts, D input width, F output width of one stacked matrix,
T tokens, B sequences, L tokens per sequence.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from meobench.layers.config import LayerConfig

ACTIVATION_FUNCTIONS = {
    "relu": F.relu,
    "gelu": F.gelu,
    # GPT-2's gelu_new: the tanh approximation of GELU.
    "gelu_tanh": functools.partial(F.gelu, approximate="tanh"),
    "silu": F.silu,
}


class StackedLinear(nn.Module):
    """E affine maps D -> F stored as ``weight`` [E, F, D] and ``bias`` [E, F].

    Initialised like ``nn.Linear``: weight and bias uniform in +-1/sqrt(D), drawn
    from ``generator`` so that a seed fixes every value.
    """

    def __init__(self, num_experts: int, d_in: int, d_out: int, bias: bool, generator: torch.Generator):
        super().__init__()
        bound = 1.0 / math.sqrt(d_in)
        weight = torch.empty(num_experts, d_out, d_in).uniform_(-bound, bound, generator=generator)
        self.weight = nn.Parameter(weight)  # [E, F, D]
        if bias:
            self.bias = nn.Parameter(torch.empty(num_experts, d_out).uniform_(-bound, bound, generator=generator))
        else:
            self.register_parameter("bias", None)

    @property
    def num_experts(self) -> int:
        return self.weight.shape[0]

    def forward_expert(self, expert: int, x: torch.Tensor) -> torch.Tensor:
        """Apply expert ``expert`` to x [..., D] -> [..., F]."""
        bias = None if self.bias is None else self.bias[expert]
        return F.linear(x, self.weight[expert], bias)


def gated(activation: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Split x [..., 2F] into gate and up halves and return activation(gate) * up [..., F]."""
    gate, up = x.chunk(2, dim=-1)
    return activation(gate) * up


class ExpertBank(nn.Module):
    """n experts of one kind, each a chain of stacked linears with the activation between.

    ``linear`` experts have one matrix (d_model -> d_ff); ``ffn`` experts have two
    (d_model -> d_ff -> d_model). ``glu`` experts have two as well: the gate and up
    projections stacked as one [2 d_ff, d_model] matrix (the layout transformers'
    Mixtral and OLMoE experts use), then the down projection. MEO merges each
    matrix of the chain separately.
    """

    def __init__(self, config: LayerConfig, generator: torch.Generator):
        super().__init__()
        self.config = config
        n = config.num_experts
        layers = [StackedLinear(n, d_in, d_out, config.bias, generator) for d_in, d_out in config.expert_matrices()]
        self.linears = nn.ModuleList(layers)
        activation = ACTIVATION_FUNCTIONS[config.activation]
        self.activation = functools.partial(gated, activation) if config.expert_kind == "glu" else activation

    @property
    def num_experts(self) -> int:
        return self.config.num_experts

    def forward_expert(self, expert: int, x: torch.Tensor) -> torch.Tensor:
        """Run expert ``expert`` on x [..., d_model] -> [..., d_out]."""
        for position, linear in enumerate(self.linears):
            if position > 0:
                x = self.activation(x)
            x = linear.forward_expert(expert, x)
        return x

    def params_per_expert(self) -> int:
        """Parameters of one expert (all its matrices and biases)."""
        return sum(p.numel() for p in self.parameters()) // self.num_experts
