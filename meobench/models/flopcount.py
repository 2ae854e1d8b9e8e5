"""FLOP figures of a model case: FlopCounterMode on the model, checked against the analytic count.

The analytic count adds the model's shared parts (attention and the head, see
meobench.models.costs) to the layer cost model of every routed site. It covers
matrix products only. fvcore traces modules with tensor arguments and the
profiler check needs elementwise terms of the whole model, so neither runs on
model cases.
"""

from __future__ import annotations

from collections import Counter

import torch

from meobench.costmodel import CaseShape, CostModel, MatmulTerm, layer_cost
from meobench.flopcheck import CHECK_TOLERANCE, FlopReport, relative_difference
from meobench.flops import count_flops
from meobench.layers import variant_spec
from meobench.models.costs import Architecture, shared_macs
from meobench.models.inputs import ModelInputs
from meobench.models.modelset import ModelSet, VariantModel
from meobench.shape_only import ShapeOnlyMode

# Phase of the matrix products outside the routed sites.
SHARED_PHASE = "model"
# (variant, strategy) of the layer cost model whose matrix products a native sparse MoE block runs.
NATIVE_COST_VARIANT = ("moe-token", "loop")


def model_cost(
    model_set: ModelSet, variant: str, strategy: str, inputs: ModelInputs, head: str, element_bytes: int
) -> CostModel:
    """Analytic matrix products of one inference forward pass of ``variant`` on ``inputs``' shapes."""
    batch, seq_len = inputs.input_ids.shape
    decoder_len = 0 if inputs.decoder_input_ids is None else inputs.decoder_input_ids.shape[1]
    arch = Architecture.from_config(model_set.preset.family, model_set.config)
    terms = [
        MatmulTerm(SHARED_PHASE, part, macs)
        for part, macs in shared_macs(arch, head, batch, seq_len, decoder_len).items()
    ]

    # The routed sites' terms, summed per phase and product over all sites.
    site_macs: Counter[tuple[str, str]] = Counter()
    weight_bytes = model_set.shared_params * element_bytes
    merged_bytes = activation_bytes = 0
    site_variant, site_strategy = variant, strategy
    if variant_spec(variant).family == "native":
        # Every transformers experts implementation runs each token's K experts once, as loop MoE does.
        site_variant, site_strategy = NATIVE_COST_VARIANT
    for routed in model_set.routed:
        tokens = seq_len if routed.side == "input" else decoder_len
        shape = CaseShape(batch, tokens, element_bytes, masked=routed.side == "input")
        cost = layer_cost(routed.layers.config, site_variant, site_strategy, shape)
        for term in cost.matmuls:
            site_macs[(term.phase, term.what)] += term.macs
        weight_bytes += cost.weight_bytes
        merged_bytes += cost.merged_bytes
        activation_bytes += cost.activation_bytes
    terms += [MatmulTerm(phase, what, macs) for (phase, what), macs in site_macs.items()]

    params = model_set.count_parameters(variant)
    return CostModel(
        matmuls=tuple(terms),
        elementwise=(),
        params_total=params.total,
        params_active=params.active,
        weight_bytes=weight_bytes,
        merged_bytes=merged_bytes,
        activation_bytes=activation_bytes,
    )


def count_model_case(module: VariantModel, inputs: ModelInputs, head: str, element_bytes: int) -> FlopReport:
    """Count one inference forward pass of ``module`` with FlopCounterMode and check it against ``model_cost``."""
    cost = model_cost(module.model_set, module.variant, module.strategy, inputs, head, element_bytes)
    with ShapeOnlyMode() as mode, torch.no_grad():
        report = FlopReport(cost, count_flops(lambda: module(inputs)))
    report.uncounted_ops = dict(mode.routing_ops)
    expected = cost.matmul_flops
    if relative_difference(report.flop_counter, expected) <= CHECK_TOLERANCE:
        report.check = "ok (FlopCounterMode only)"
    else:
        report.check = f"FlopCounterMode: {report.flop_counter:.4g} vs analytic {expected:.4g}"
    return report
