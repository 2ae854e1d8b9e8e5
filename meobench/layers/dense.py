"""The dense baseline: one expert of the bank, no router."""

from __future__ import annotations

import torch
from torch import nn
from torch.profiler import record_function

from meobench.layers.experts import ExpertBank


class DenseLayer(nn.Module):
    """Runs expert ``expert`` of the bank on every token: the cost MEO aims for."""

    def __init__(self, bank: ExpertBank, expert: int = 0):
        super().__init__()
        self.bank = bank
        self.expert = expert

    def forward(
        self,
        x: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        task_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        with record_function("expert"):
            return self.bank.forward_expert(self.expert, x)
