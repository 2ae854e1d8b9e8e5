"""Transformers models with their feed-forward layers replaced by MoE and MEO layers."""

from meobench.models.families import FAMILIES, HEADS, PLACEMENTS
from meobench.models.inputs import ModelInputs, make_model_inputs
from meobench.models.modelset import ModelSet, VariantModel, build_dense_model, count_dense_parameters
from meobench.models.presets import PRESETS, ModelPreset, get_preset

__all__ = [
    "FAMILIES",
    "HEADS",
    "PLACEMENTS",
    "PRESETS",
    "ModelInputs",
    "ModelPreset",
    "ModelSet",
    "VariantModel",
    "build_dense_model",
    "count_dense_parameters",
    "get_preset",
    "make_model_inputs",
]
