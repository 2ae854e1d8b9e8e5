"""A transformers model with routed feed-forward layers, and its variants on shared weights.

``ModelSet`` plays for a whole model the part ``LayerSet`` plays for one layer:
``build(variant, strategy)`` returns a module that runs the model with every
routed layer set to that variant, and ``count_parameters`` counts what it uses.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import PreTrainedModel

from meobench.errors import ConfigError
from meobench.layers import LayerConfig, ParameterCount, variant_spec
from meobench.models.context import ForwardContext, forward_context
from meobench.models.families import FAMILIES, HEADS, find_sites
from meobench.models.inputs import ModelInputs
from meobench.models.placement import replace_sites
from meobench.models.presets import ModelPreset


def build_dense_model(preset: ModelPreset, head: str, seed: int, pretrained: Path | None = None) -> PreTrainedModel:
    """Build the preset's model with random weights drawn under ``seed``, or load a local checkpoint.

    ``pretrained`` is a local model directory; it is read with local_files_only, so
    nothing is downloaded.
    """
    if head not in HEADS:
        raise ConfigError(f"head {head!r} is not valid; choose one of {', '.join(HEADS)}.")
    model_class = FAMILIES[preset.family].model_class(head)
    if pretrained is not None:
        if not Path(pretrained).is_dir():
            raise ConfigError(f"pretrained model directory {str(pretrained)!r} not found; give a local directory.")
        return model_class.from_pretrained(pretrained, local_files_only=True).eval()
    # fork_rng keeps the global generator as it was: transformers initialises from it.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class(preset.config())
    return model.eval()


def count_dense_parameters(preset: ModelPreset, head: str) -> int:
    """Parameters of the preset's dense model, built on the meta device so no memory is filled.

    Tied weights (an LM head sharing the embedding matrix) count once.
    """
    model_class = FAMILIES[preset.family].model_class(head)
    with torch.device("meta"):
        model = model_class(preset.config())
    return sum(p.numel() for p in model.parameters())


class ModelSet(nn.Module):
    """One model whose feed-forward sites hold routed layers, and the variants built on it."""

    def __init__(
        self,
        preset: ModelPreset,
        placement: str,
        template: LayerConfig,
        head: str = "lm",
        seed: int = 0,
        expert_noise: float = 0.01,
        pretrained: Path | None = None,
        fill_experts: bool = True,
    ):
        """``template`` supplies the routing options; widths, bias and activation come from each site.

        ``fill_experts=False`` skips copying the dense weights into the experts (see replace_sites).
        """
        super().__init__()
        self.preset = preset
        self.family = FAMILIES[preset.family]
        self.model = build_dense_model(preset, head, seed, pretrained)
        sites = find_sites(self.family, self.model, placement)
        if not sites:
            raise ConfigError(f"model {preset.name!r} has no feed-forward sites for placement {placement!r}.")
        self.routed = replace_sites(sites, placement, template, seed, expert_noise, fill_experts)
        routed_ids = {id(p) for module in self.routed for p in module.parameters()}
        self.shared_params = sum(p.numel() for p in self.model.parameters() if id(p) not in routed_ids)
        """Parameters outside the routed layers: embeddings, attention, norms, heads."""

    @property
    def config(self):
        return self.model.config

    def build(self, variant: str, strategy: str | None = None) -> VariantModel:
        """Build the model running ``variant`` with ``strategy`` (its default when None) in every routed layer."""
        strategy = strategy or variant_spec(variant).default_strategy
        for module in self.routed:
            module.variant(variant, strategy)  # builds now, so an invalid combination raises here
        return VariantModel(self, variant, strategy)

    def count_parameters(self, variant: str) -> ParameterCount:
        """Shared parameters plus each routed layer's count for ``variant``."""
        counts = [module.layers.count_parameters(variant) for module in self.routed]
        return ParameterCount(
            total=self.shared_params + sum(c.total for c in counts),
            active=self.shared_params + sum(c.active for c in counts),
        )


class VariantModel(nn.Module):
    """Calls the model inside a ForwardContext that selects one variant and carries the masks."""

    def __init__(self, model_set: ModelSet, variant: str, strategy: str):
        super().__init__()
        self.model_set = model_set
        self.variant = variant
        self.strategy = strategy

    def forward(self, inputs: ModelInputs) -> torch.Tensor:
        return self.forward_with_aux_loss(inputs)[0]

    def forward_with_aux_loss(self, inputs: ModelInputs) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the logits (or last hidden state of a bare model) and the summed load-balancing loss."""
        context = ForwardContext(
            self.variant,
            self.strategy,
            # The decoder sequence has no padding, so its routed layers average all tokens.
            {"input": inputs.attention_mask, "decoder": None},
            inputs.task_ids,
        )
        with forward_context(context):
            outputs = self.model_set.model(**inputs.model_kwargs())
        output = outputs.logits if getattr(outputs, "logits", None) is not None else outputs.last_hidden_state
        aux_loss = sum(context.aux_losses, output.new_zeros(()))
        return output, aux_loss
