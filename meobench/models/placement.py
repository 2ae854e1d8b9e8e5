"""Replace a model's dense feed-forward weights with routed layers built on meobench's expert banks.

Each site gets its own LayerSet (expert bank, router and token attention block).
Expert 0 contains the dense weights unchanged, so the ``dense`` variant reproduces the
original model, and the other experts contain the same weights plus seeded Gaussian
noise of a relative scale. The reference MEO code copies the dense weights into
every expert unperturbed. Identical experts give the same output for every routing
choice, which would hide any difference between MoE and MEO.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from meobench.layers import LayerConfig, LayerSet
from meobench.layers.base import RoutedLayer
from meobench.models.context import current_context
from meobench.models.families import Site


class RoutedFeedForward(nn.Module):
    """A routed layer in place of a dense feed-forward linear or block.

    Which variant runs, with which attention mask and task ids, is read from the
    current ForwardContext, so one model runs every variant on shared weights.
    """

    def __init__(self, layers: LayerSet, side: str):
        super().__init__()
        self.layers = layers
        self.side = side
        # Built variants by (variant, strategy). A plain dict, not a ModuleDict: they
        # only reference ``layers``' parameters, which are registered once above.
        self._variants: dict[tuple[str, str], nn.Module] = {}

    @property
    def weight(self) -> torch.Tensor:
        """The stacked first expert matrix [E, F, D]; T5's feed-forward block reads ``wo.weight.dtype``."""
        return self.layers.bank.linears[0].weight

    def variant(self, variant: str, strategy: str) -> nn.Module:
        """Return the layer module of ``variant`` with ``strategy``, building it on first use."""
        key = (variant, strategy)
        if key not in self._variants:
            self._variants[key] = self.layers.build(variant, strategy)
        return self._variants[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        context = current_context()
        module = self.variant(context.variant, context.strategy)
        mask = context.attention_masks.get(self.side)
        if isinstance(module, RoutedLayer):
            output, routing = module.route_and_forward(x, mask, context.task_ids)
            context.aux_losses.append(routing.aux_loss)
            return output
        return module(x, mask, context.task_ids)


def dense_weight(linear: nn.Module) -> torch.Tensor:
    """Weight [out, in] of an nn.Linear, or of GPT-2's Conv1D, which stores it as [in, out]."""
    if isinstance(linear, Conv1D):
        return linear.weight.t()
    return linear.weight


def site_config(site: Site, expert_kind: str, template: LayerConfig) -> LayerConfig:
    """Return a copy of the template with the site's widths, bias and activation."""
    first, last = dense_weight(site.linears[0]), dense_weight(site.linears[-1])
    d_model = first.shape[1]
    d_ff = first.shape[0]
    if expert_kind == "ffn" and last.shape[0] != d_model:
        raise ValueError(f"{site.path}: the ffn block maps {d_model} to {last.shape[0]}, not back to {d_model}")
    return dataclasses.replace(
        template,
        d_model=d_model,
        d_ff=d_ff,
        expert_kind=expert_kind,
        bias=site.linears[0].bias is not None,
        activation=site.activation,
    )


@torch.no_grad()
def fill_experts(layers: LayerSet, site: Site, noise_scale: float, generator: torch.Generator) -> None:
    """Copy the site's dense weights into every expert; perturb experts 1..n-1.

    Noise: each element of expert i >= 1 gets ``noise_scale * std(W) * N(0, 1)``
    added, std(W) being the standard deviation of that dense matrix (or bias).
    """
    for stacked, linear in zip(layers.bank.linears, site.linears):
        _fill(stacked.weight, dense_weight(linear), noise_scale, generator)
        if stacked.bias is not None:
            _fill(stacked.bias, linear.bias, noise_scale, generator)


def _fill(stacked: torch.Tensor, dense: torch.Tensor, noise_scale: float, generator: torch.Generator) -> None:
    stacked.copy_(dense.detach().to(stacked.dtype).expand_as(stacked))
    if noise_scale > 0 and stacked.shape[0] > 1:
        noise = torch.randn(stacked[1:].shape, generator=generator, dtype=stacked.dtype)
        stacked[1:] += noise * (noise_scale * dense.detach().float().std())


def replace_sites(
    sites: list[Site],
    expert_kind: str,
    template: LayerConfig,
    seed: int,
    noise_scale: float,
    fill: bool = True,
) -> list[RoutedFeedForward]:
    """Put a RoutedFeedForward at every site, its experts filled from the dense weights.

    Site i gets LayerSet seed ``seed + i``, so every router differs and a seed fixes all.
    ``fill=False`` leaves the experts as LayerSet built them: counting FLOPs needs
    shapes only, and filling writes every expert's memory even inside ShapeOnlyMode.
    """
    routed = []
    generator = torch.Generator().manual_seed(seed)
    for index, site in enumerate(sites):
        layers = LayerSet(site_config(site, expert_kind, template), seed=seed + index)
        if fill:
            fill_experts(layers, site, noise_scale, generator)
        module = RoutedFeedForward(layers, site.side)
        setattr(site.parent, site.attribute, module)
        for owner, attribute in site.cleared:
            setattr(owner, attribute, nn.Identity())
        routed.append(module)
    return routed
