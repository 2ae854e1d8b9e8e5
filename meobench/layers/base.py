"""The call signature every layer variant shares."""

from __future__ import annotations

import torch
from torch import nn

from meobench.layers.router import Routing


class RoutedLayer(nn.Module):
    """A layer with a router: ``forward`` returns the output of ``route_and_forward``.

    Train-mode callers use ``route_and_forward`` to also get the routing decision
    and its load-balancing loss.
    """

    def route_and_forward(
        self,
        x: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        task_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, Routing]:
        raise NotImplementedError

    def forward(
        self,
        x: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        task_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.route_and_forward(x, attention_mask, task_ids)[0]
