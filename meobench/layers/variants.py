"""Named layer variants built from one shared expert bank, router and token attention block."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from meobench.errors import ConfigError
from meobench.layers.config import LayerConfig
from meobench.layers.dense import DenseLayer
from meobench.layers.experts import ExpertBank
from meobench.layers.meo import MERGE_STRATEGIES, MEOLayer
from meobench.layers.moe import MOE_STRATEGIES, MoELayer
from meobench.layers.router import Router
from meobench.layers.token_attention import TokenAttention

# Strategy name of the dense baseline, which has nothing to choose.
NO_STRATEGY = "none"

# Strategies of the ``native`` variant: the experts implementations of transformers 5.25
# that run on any device ("eager" is the experts module's own per-expert loop).
NATIVE_STRATEGIES = ("batched_mm", "eager", "grouped_mm")


@dataclass(frozen=True)
class VariantSpec:
    """Meaning of a variant name: its family, routing level and default strategy."""

    family: str
    """``dense``, ``moe``, ``meo``, or ``native`` (a native MoE model's own sparse block)."""
    level: str | None
    """Routing level: ``token``, ``sequence``, ``task``; None for the dense baseline."""
    default_strategy: str
    """Strategy used when a scenario names none for this family."""

    def strategies(self) -> tuple[str, ...]:
        """Strategy names that apply to this variant."""
        if self.family == "moe":
            return tuple(sorted(MOE_STRATEGIES))
        if self.family == "meo":
            return tuple(sorted(MERGE_STRATEGIES))
        if self.family == "native":
            return NATIVE_STRATEGIES
        return (NO_STRATEGY,)


VARIANTS: dict[str, VariantSpec] = {
    "dense": VariantSpec("dense", None, NO_STRATEGY),
    "moe-token": VariantSpec("moe", "token", "loop"),
    "moe-sequence": VariantSpec("moe", "sequence", "loop"),
    "moe-task": VariantSpec("moe", "task", "loop"),
    "meo-sequence": VariantSpec("meo", "sequence", "gemm"),
    "meo-token": VariantSpec("meo", "token", "gemm"),
    "meo-task": VariantSpec("meo", "task", "gemm"),
}

# Variants that exist only inside a model: ``native`` runs a native MoE preset's own
# sparse MoE block (see meobench.models), so LayerSet cannot build it.
MODEL_VARIANTS: dict[str, VariantSpec] = {
    "native": VariantSpec("native", "token", "grouped_mm"),
}

# Every variant name a scenario may list, layer variants first.
ALL_VARIANTS: dict[str, VariantSpec] = {**VARIANTS, **MODEL_VARIANTS}


def reference_variant(variant: str) -> str | None:
    """Name the MoE variant whose output and latency a variant is compared with.

    MoE and MEO variants compare with MoE at the same routing level. The dense
    baseline compares with token-level MoE, the vanilla layer it would replace.
    """
    level = ALL_VARIANTS[variant].level or "token"
    return f"moe-{level}"


@dataclass(frozen=True)
class ParameterCount:
    total: int
    """Parameters the variant contains (expert bank, the router matrices it uses, extras)."""
    active: int
    """Parameters read to compute one token's output: router, the K selected experts, extras."""


class LayerSet(nn.Module):
    """The shared weights of one benchmark case, and the variants built on them.

    Every variant built here reads the same expert bank, router and token attention
    block, so their outputs are directly comparable.
    """

    def __init__(self, config: LayerConfig, seed: int = 0):
        super().__init__()
        self.config = config
        generator = torch.Generator().manual_seed(seed)
        self.bank = ExpertBank(config, generator)
        self.router = Router(config, generator)
        # Built only when it fits, so MoE variants still run at a d_model the reduction does not divide.
        self.token_attention = None
        if config.token_attention_fits:
            self.token_attention = TokenAttention(config.d_model, config.token_attention_reduction, generator)

    def build(self, variant: str, strategy: str | None = None) -> nn.Module:
        """Build ``variant`` with ``strategy`` (its default when None) on the shared weights."""
        spec = variant_spec(variant)
        strategy = strategy or spec.default_strategy
        if strategy not in spec.strategies():
            raise ConfigError(
                f"strategy {strategy!r} does not apply to variant {variant!r}; "
                f"choose one of {', '.join(spec.strategies())}."
            )
        if spec.family == "native":
            raise ConfigError(native_variant_error(variant))
        if spec.family == "dense":
            return DenseLayer(self.bank)
        if spec.family == "moe":
            return MoELayer(self.bank, self.router, spec.level, strategy)
        if spec.level == "token":
            self.config.require_token_attention()
        return MEOLayer(self.bank, self.router, spec.level, strategy, self.token_attention)

    def count_parameters(self, variant: str) -> ParameterCount:
        """Parameters of ``variant``, counted from the tensors it uses."""
        spec = variant_spec(variant)
        if spec.family == "native":
            raise ConfigError(native_variant_error(variant))
        per_expert = self.bank.params_per_expert()
        if spec.family == "dense":
            return ParameterCount(per_expert, per_expert)

        router = self.router.w_gate.numel()
        if self.config.noisy_gating:
            router += self.router.w_noise.numel()
        if spec.level == "task":
            router += self.router.task_embedding.numel()
        extras = 0
        if spec.family == "meo" and spec.level == "token" and self.token_attention is not None:
            extras = sum(p.numel() for p in self.token_attention.parameters())
        bank_total = sum(p.numel() for p in self.bank.parameters())
        return ParameterCount(
            total=bank_total + router + extras,
            active=router + self.config.top_k * per_expert + extras,
        )


def variant_spec(variant: str) -> VariantSpec:
    """Look up a variant by name, with an error that lists the valid names."""
    try:
        return ALL_VARIANTS[variant]
    except KeyError:
        raise ConfigError(f"variant {variant!r} is not known; choose one of {', '.join(ALL_VARIANTS)}.") from None


def native_variant_error(variant: str) -> str:
    """Message for a ``native`` variant requested where no native MoE block exists."""
    return (
        f"variant {variant!r} runs the sparse MoE block of a native MoE model and has no layer-only form; "
        "add a native MoE preset (mixtral-tiny, olmoe-tiny, ...) to sweep.model, or drop the variant."
    )
