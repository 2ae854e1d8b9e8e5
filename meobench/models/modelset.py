"""A transformers model with routed feed-forward layers, and its variants on shared weights.

``ModelSet`` plays for a whole model the part ``LayerSet`` plays for one layer:
``build(variant, strategy)`` returns a module that runs the model with every
routed layer set to that variant, and ``count_parameters`` counts what it uses.
"""

from __future__ import annotations

from pathlib import Path

import psutil
import torch
from torch import nn
from transformers import PreTrainedModel

from meobench.errors import ConfigError
from meobench.layers import LayerConfig, ParameterCount, variant_spec
from meobench.layers.variants import NATIVE_STRATEGIES
from meobench.models.context import ForwardContext, forward_context
from meobench.models.costs import Architecture, feed_forward_sites
from meobench.models.families import FAMILIES, HEADS, find_sites
from meobench.models.inputs import ModelInputs
from meobench.models.placement import replace_sites
from meobench.models.presets import ModelPreset

# Experts of a native MoE preset: (num_experts, top_k), or None for the preset's own values.
NativeExperts = tuple[int, int] | None

# Weights are built in float32 on the host before a case moves them to its device and dtype.
BUILD_ELEMENT_BYTES = 4


def build_dense_model(
    preset: ModelPreset, head: str, seed: int, pretrained: Path | None = None, experts: NativeExperts = None
) -> PreTrainedModel:
    """Build the preset's model with random weights drawn under ``seed``, or load a local checkpoint.

    ``pretrained`` is a local model directory; it is read with local_files_only, so
    nothing is downloaded. ``experts`` sets a native MoE preset's expert count and top-k.
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
        model = model_class(preset.config(*(experts or ())))
    return model.eval()


def count_dense_parameters(preset: ModelPreset, head: str, experts: NativeExperts = None) -> int:
    """Parameters of the preset's dense model (a native MoE preset's own MoE model), built on the
    meta device so no memory is filled.

    Tied weights (an LM head sharing the embedding matrix) count once.
    """
    model_class = FAMILIES[preset.family].model_class(head)
    with torch.device("meta"):
        model = model_class(preset.config(*(experts or ())))
    return sum(p.numel() for p in model.parameters())


def estimate_build_bytes(preset: ModelPreset, head: str, placement: str, num_experts: int, top_k: int) -> int:
    """Estimate the bytes of float32 weights that a built ModelSet of ``preset`` contains.

    The model's parameters, plus for a dense preset the expert banks: n copies of every
    routed feed-forward matrix, biases left out. A native MoE preset's bank shares the
    block's experts, so it adds nothing beyond the model.
    """
    if preset.native_moe:
        return BUILD_ELEMENT_BYTES * count_dense_parameters(preset, head, (num_experts, top_k))
    sites = feed_forward_sites(Architecture.from_preset(preset), placement, seq_len=1, decoder_len=1)
    matrices_per_expert = {"linear": 1, "ffn": 2}
    bank = sum(site.count * matrices_per_expert[site.expert_kind] * site.d_in * site.d_out for site in sites)
    return BUILD_ELEMENT_BYTES * (count_dense_parameters(preset, head) + num_experts * bank)


def require_build_memory(preset: ModelPreset, head: str, placement: str, num_experts: int, top_k: int) -> None:
    """Raise ConfigError when the estimated weights of the model exceed the host's available memory.

    NOTE: only host memory is checked. A CUDA case also needs the weights to fit on the
    device once moved there, which this check does not see.
    """
    needed = estimate_build_bytes(preset, head, placement, num_experts, top_k)
    available = psutil.virtual_memory().available
    if needed > available:
        raise ConfigError(
            f"model {preset.name!r} with {num_experts} experts needs about {needed / 2**30:.1f} GiB of float32 "
            f"weights to build, but the host has {available / 2**30:.1f} GiB of memory available; run it on a host "
            "with more memory, pick a smaller preset, or set models.check_memory: false to build it anyway."
        )


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
        check_memory: bool = True,
    ):
        """``template`` supplies the routing options, and widths, bias and activation come from each site.
        For a native MoE preset, the template's num_experts and top_k also set the model's own.

        ``fill_experts=False`` skips copying the dense weights into the experts (see replace_sites).
        ``check_memory`` rejects a model whose weights would not fit in the host's available
        memory (see require_build_memory). It applies to every build of a native MoE preset,
        and to other presets only when ``fill_experts`` is on, because their counting builds
        (ShapeOnlyMode) never write the weights they allocate.
        NOTE: a counting build of a real-size native preset has not been tried, so it is
        checked like a full one.
        """
        super().__init__()
        self.preset = preset
        self.family = FAMILIES[preset.family]
        experts = (template.num_experts, template.top_k) if preset.native_moe else None
        if check_memory and pretrained is None and (fill_experts or preset.native_moe):
            require_build_memory(preset, head, placement, template.num_experts, template.top_k)
        self.model = build_dense_model(preset, head, seed, pretrained, experts)
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
        if variant_spec(variant).family == "native" and strategy not in NATIVE_STRATEGIES:
            raise ConfigError(
                f"strategy {strategy!r} does not apply to variant {variant!r}; "
                f"choose one of {', '.join(NATIVE_STRATEGIES)}."
            )
        for module in self.routed:
            module.variant(variant, strategy)  # builds now, so an invalid combination raises here
        return VariantModel(self, variant, strategy)

    def count_parameters(self, variant: str) -> ParameterCount:
        """Shared parameters plus each routed layer's count for ``variant``."""
        counts = [module.count_parameters(variant) for module in self.routed]
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
        model = self.model_set.model
        native = variant_spec(self.variant).family == "native"
        if native and model.get_experts_implementation()[""] != self.strategy:
            # The native block's experts read the implementation from the model's config at each call.
            model.set_experts_implementation(self.strategy)
        with forward_context(context):
            outputs = model(**inputs.model_kwargs())
        output = outputs.logits if getattr(outputs, "logits", None) is not None else outputs.last_hidden_state
        aux_loss = sum(context.aux_losses, output.new_zeros(()))
        return output, aux_loss
