"""MoE, MEO and dense layers built on one shared expert bank and router."""

from meobench.layers.config import EXPERT_KINDS, ROUTING_LEVELS, LayerConfig
from meobench.layers.dense import DenseLayer
from meobench.layers.experts import ExpertBank, StackedLinear
from meobench.layers.meo import MERGE_STRATEGIES, MEOLayer, register_merge
from meobench.layers.moe import MOE_STRATEGIES, MoELayer, register_strategy
from meobench.layers.router import Router, Routing
from meobench.layers.token_attention import TokenAttention
from meobench.layers.variants import (
    ALL_VARIANTS,
    MODEL_VARIANTS,
    NO_STRATEGY,
    VARIANTS,
    LayerSet,
    ParameterCount,
    reference_variant,
    variant_spec,
)

__all__ = [
    "ALL_VARIANTS",
    "EXPERT_KINDS",
    "MERGE_STRATEGIES",
    "MODEL_VARIANTS",
    "MOE_STRATEGIES",
    "NO_STRATEGY",
    "ROUTING_LEVELS",
    "VARIANTS",
    "DenseLayer",
    "ExpertBank",
    "LayerConfig",
    "LayerSet",
    "MEOLayer",
    "MoELayer",
    "ParameterCount",
    "Router",
    "Routing",
    "StackedLinear",
    "TokenAttention",
    "reference_variant",
    "register_merge",
    "register_strategy",
    "variant_spec",
]
