"""Benchmark cases: the hashable spec of one measurement, and the sweep that lists them."""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, fields

from meobench.devices import resolve_device
from meobench.layers.config import LayerConfig
from meobench.layers.variants import ALL_VARIANTS
from meobench.models.presets import get_preset
from meobench.scenario import Scenario


@dataclass(frozen=True)
class CaseGroup:
    """Parameters shared by the variants that run on one set of weights and inputs."""

    num_experts: int
    top_k: int
    batch_size: int
    seq_len: int
    d_model: int
    d_ff: int
    expert_kind: str
    dtype: str
    device: str
    """Device the case runs on, with ``auto`` already resolved (cpu, cuda, cuda:N or mps)."""
    model: str | None = None
    """Model preset of a model case, whose feed-forward sites hold the layers; None for a layer case.
    In a model case d_model and d_ff are the preset's widths and expert_kind is the placement."""

    def layer_config(self, scenario: Scenario) -> LayerConfig:
        """Build the layer configuration; raises ConfigError for an impossible combination."""
        options = scenario.layer
        return LayerConfig(
            num_experts=self.num_experts,
            top_k=self.top_k,
            d_model=self.d_model,
            d_ff=self.d_ff,
            expert_kind=self.expert_kind,
            bias=options.bias,
            activation=options.activation,
            noisy_gating=options.noisy_gating,
            aux_loss_weight=options.aux_loss_weight,
            num_tasks=options.num_tasks,
            token_attention_reduction=options.token_attention_reduction,
        )


@dataclass(frozen=True)
class Case:
    """One row of results: a variant with one strategy on one case group."""

    group: CaseGroup
    variant: str
    strategy: str

    @property
    def case_id(self) -> str:
        """Readable unique id, stable across runs of the same scenario."""
        g = self.group
        if g.model is not None:
            return (
                f"{g.model}.{self.variant}.{self.strategy}.{g.expert_kind}-n{g.num_experts}-k{g.top_k}"
                f"-b{g.batch_size}-l{g.seq_len}-{g.dtype}-{g.device}"
            )
        return (
            f"{self.variant}.{self.strategy}.n{g.num_experts}-k{g.top_k}-b{g.batch_size}-l{g.seq_len}"
            f"-d{g.d_model}-f{g.d_ff}-{g.expert_kind}-{g.dtype}-{g.device}"
        )

    def params(self) -> dict[str, object]:
        """Flat case parameters, as they appear in result rows."""
        return {"variant": self.variant, "strategy": self.strategy, **asdict(self.group)}


# Sweep keys whose cartesian product gives the layer case groups.
GROUP_KEYS = tuple(field.name for field in fields(CaseGroup) if field.name != "model")
# Sweep keys a model case takes from the sweep; the preset and placement give the rest.
MODEL_GROUP_KEYS = ("num_experts", "top_k", "batch_size", "seq_len", "dtype", "device")


def expand(scenario: Scenario, device: str | None = None) -> list[Case]:
    """List all cases of the sweep, grouped so that variants of one group are adjacent.

    ``device`` replaces the sweep's device list; ``auto`` resolves to this machine's best device.
    """
    cases = []
    for group in _groups(scenario, device):
        for variant in scenario.variants:
            for strategy in strategies_for(variant, scenario.sweep.strategy):
                cases.append(Case(group, variant, strategy))
    return cases


def count_cases(scenario: Scenario, device: str | None = None) -> int:
    """Number of cases ``expand`` would list, computed without listing them."""
    groups = math.prod(len(values) for values in _group_values(scenario, device))
    if scenario.sweep.model:
        groups = 0
        for model in scenario.sweep.model:
            placements, swept = _model_group_values(scenario, device, model)
            groups += len(placements) * math.prod(len(values) for values in swept)
    per_group = sum(len(strategies_for(variant, scenario.sweep.strategy)) for variant in scenario.variants)
    return groups * per_group


def _group_values(
    scenario: Scenario, device: str | None, keys: tuple[str, ...] = GROUP_KEYS
) -> list[list[object]]:
    """List the swept values of each of ``keys``, in order, with devices resolved and deduplicated."""
    sweep = scenario.sweep
    devices = [device] if device else sweep.device
    resolved = list(dict.fromkeys(resolve_device(name) for name in devices))
    return [resolved if key == "device" else getattr(sweep, key) for key in keys]


def _groups(scenario: Scenario, device: str | None) -> list[CaseGroup]:
    """List the case groups: the sweep's product, or for model cases one group per model,
    placement and remaining sweep values, with d_model and d_ff from the preset."""
    sweep = scenario.sweep
    if not sweep.model:
        return [CaseGroup(*combination) for combination in itertools.product(*_group_values(scenario, device))]
    groups = []
    for model in sweep.model:
        d_model, d_ff = get_preset(model).widths()
        placements, swept = _model_group_values(scenario, device, model)
        for placement in placements:
            for n, k, batch, seq_len, dtype, resolved in itertools.product(*swept):
                groups.append(CaseGroup(n, k, batch, seq_len, d_model, d_ff, placement, dtype, resolved, model=model))
    return groups


def _model_group_values(scenario: Scenario, device: str | None, model: str) -> tuple[list[str], list[list[object]]]:
    """Placements and swept values (MODEL_GROUP_KEYS order) of one model's case groups.

    A native MoE preset's sparse block is one routed layer of whole gated experts, so
    it runs under placement ``ffn`` whatever sweep.placement lists. Its expert count
    and top-k are the preset's own unless sweep.num_experts or sweep.top_k differ from
    their defaults (a scenario dumped into results.json lists every default).
    """
    sweep = scenario.sweep
    swept = _group_values(scenario, device, MODEL_GROUP_KEYS)
    preset = get_preset(model)
    if not preset.native_moe:
        return list(sweep.placement), swept
    for key, own in zip(("num_experts", "top_k"), preset.native_experts()):
        if getattr(sweep, key) == type(sweep).model_fields[key].default:
            swept[MODEL_GROUP_KEYS.index(key)] = [own]
    return ["ffn"], swept


def strategies_for(variant: str, requested: list[str]) -> list[str]:
    """Pick the requested strategies that apply to ``variant``, or its default when none does."""
    spec = ALL_VARIANTS[variant]
    chosen = [name for name in requested if name in spec.strategies()]
    return chosen or [spec.default_strategy]
