"""The token attention block of token-level MEO: x + W_up relu(W_down x + b_down) + b_up.

Shape legend: D d_model, R = D / reduction (the bottleneck width).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class TokenAttention(nn.Module):
    """Residual bottleneck that adds token-specific information before sequence-level merging.

    Initialised as the MEO reference code does: W_down Kaiming-uniform, W_up and both
    biases zero, so the block starts as the identity.
    """

    def __init__(self, d_model: int, reduction: int, generator: torch.Generator):
        super().__init__()
        bottleneck = d_model // reduction
        self.down = nn.Linear(d_model, bottleneck)  # W_down [R, D]
        self.up = nn.Linear(bottleneck, d_model)  # W_up [D, R]
        with torch.no_grad():
            nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5), generator=generator)
            self.down.bias.zero_()
            self.up.weight.zero_()
            self.up.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(F.relu(self.down(x)))
