"""Replace a model's dense feed-forward weights with routed layers built on meobench's expert banks.

Each site gets its own LayerSet (expert bank, router and token attention block).
Expert 0 contains the dense weights unchanged, so the ``dense`` variant reproduces the
original model, and the other experts contain the same weights plus seeded Gaussian
noise of a relative scale. The reference MEO code copies the dense weights into
every expert unperturbed. Identical experts give the same output for every routing
choice, which would hide any difference between MoE and MEO.

A native MoE block (Mixtral, OLMoE) is moved instead: the routed layer's expert bank
takes the block's fused expert parameters themselves (gate and up projections
[E, 2F, D], down projection [E, D, F]), and its router a copy of the block's router
matrix, so MoE and MEO variants run on the model's own weights with no noise added.
The block stays in the routed layer as ``native``, the module the ``native`` variant runs.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from meobench.errors import ConfigError
from meobench.layers import LayerConfig, LayerSet, ParameterCount, variant_spec
from meobench.layers.base import RoutedLayer
from meobench.layers.variants import native_variant_error
from meobench.models.context import current_context
from meobench.models.families import Site


class RoutedFeedForward(nn.Module):
    """A routed layer in place of a dense feed-forward linear or block.

    Which variant runs, with which attention mask and task ids, is read from the
    current ForwardContext, so one model runs every variant on shared weights.
    """

    def __init__(self, layers: LayerSet, side: str, native: nn.Module | None = None):
        super().__init__()
        self.layers = layers
        self.side = side
        self.native = native
        """The native sparse MoE block whose experts ``layers`` shares; None at a dense feed-forward site."""
        # Built variants by (variant, strategy). A plain dict, not a ModuleDict: they
        # only reference ``layers``' parameters, which are registered once above.
        self._variants: dict[tuple[str, str], nn.Module] = {}

    @property
    def weight(self) -> torch.Tensor:
        """The stacked first expert matrix [E, F, D]; T5's feed-forward block reads ``wo.weight.dtype``."""
        return self.layers.bank.linears[0].weight

    def variant(self, variant: str, strategy: str) -> nn.Module:
        """Return the layer module of ``variant`` with ``strategy``, building it on first use."""
        if variant_spec(variant).family == "native":
            if self.native is None:
                raise ConfigError(native_variant_error(variant))
            return self.native
        key = (variant, strategy)
        if key not in self._variants:
            self._variants[key] = self.layers.build(variant, strategy)
        return self._variants[key]

    def count_parameters(self, variant: str) -> ParameterCount:
        """Parameters of ``variant`` at this site; the native block counts its router and experts."""
        if variant_spec(variant).family != "native" or self.native is None:
            return self.layers.count_parameters(variant)
        router = self.native.gate.weight.numel()
        experts = sum(p.numel() for p in self.native.experts.parameters())
        per_expert = experts // self.layers.config.num_experts
        return ParameterCount(total=router + experts, active=router + self.layers.config.top_k * per_expert)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        context = current_context()
        module = self.variant(context.variant, context.strategy)
        if module is self.native:
            return module(x)
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
    if site.native_block is not None:
        return native_site_config(site, template)
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


def native_site_config(site: Site, template: LayerConfig) -> LayerConfig:
    """Return a copy of the template with a native block's widths, gated experts and gate normalisation.

    The template's expert count and top-k must be the block's, because the bank takes
    the block's experts and both variants must select the same number of them.
    """
    block = site.native_block
    num_experts, double_ffn, d_model = block.experts.gate_up_proj.shape
    if (template.num_experts, template.top_k) != (num_experts, block.gate.top_k):
        raise ConfigError(
            f"{site.path} has {num_experts} experts and top-k {block.gate.top_k}, but the case asks for "
            f"num_experts={template.num_experts}, top_k={template.top_k}; set those to the model's values."
        )
    return dataclasses.replace(
        template,
        d_model=d_model,
        d_ff=double_ffn // 2,
        expert_kind="glu",
        bias=False,
        activation=site.activation,
        # Mixtral's router always renormalises the kept probabilities; OLMoE's only with norm_topk_prob.
        normalize_top_k=getattr(block.gate, "norm_topk_prob", True),
    )


def move_native_experts(layers: LayerSet, block: nn.Module, copy_router: bool = True) -> None:
    """Make the bank use the native block's expert parameters, and copy its router matrix.

    The bank's stacked matrices then are the block's tensors, not copies, so both
    variants always run the same weights and the experts take no extra memory.
    ``copy_router=False`` leaves the router as built, for counting FLOPs.
    """
    gate_up, down = layers.bank.linears
    gate_up.weight = block.experts.gate_up_proj  # [E, 2F, D]: gate rows first, then up
    down.weight = block.experts.down_proj  # [E, D, F]
    if copy_router:
        with torch.no_grad():
            layers.router.w_gate.copy_(block.gate.weight.t())  # the block's [E, D] -> [D, E]


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
        if site.native_block is not None:
            move_native_experts(layers, site.native_block, copy_router=fill)
        elif fill:
            fill_experts(layers, site, noise_scale, generator)
        module = RoutedFeedForward(layers, site.side, site.native_block)
        setattr(site.parent, site.attribute, module)
        for owner, attribute in site.cleared:
            setattr(owner, attribute, nn.Identity())
        routed.append(module)
    return routed
