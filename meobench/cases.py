"""Benchmark cases: the hashable spec of one measurement, and the sweep that lists them."""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, fields

from meobench.devices import resolve_device
from meobench.layers.config import LayerConfig
from meobench.layers.variants import VARIANTS
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
        return (
            f"{self.variant}.{self.strategy}.n{g.num_experts}-k{g.top_k}-b{g.batch_size}-l{g.seq_len}"
            f"-d{g.d_model}-f{g.d_ff}-{g.expert_kind}-{g.dtype}-{g.device}"
        )

    def params(self) -> dict[str, object]:
        """Flat case parameters, as they appear in result rows."""
        return {"variant": self.variant, "strategy": self.strategy, **asdict(self.group)}


GROUP_KEYS = tuple(field.name for field in fields(CaseGroup))


def expand(scenario: Scenario, device: str | None = None) -> list[Case]:
    """List all cases of the sweep, grouped so that variants of one group are adjacent.

    ``device`` replaces the sweep's device list; ``auto`` resolves to this machine's best device.
    """
    cases = []
    for combination in itertools.product(*_group_values(scenario, device)):
        group = CaseGroup(*combination)
        for variant in scenario.variants:
            for strategy in strategies_for(variant, scenario.sweep.strategy):
                cases.append(Case(group, variant, strategy))
    return cases


def count_cases(scenario: Scenario, device: str | None = None) -> int:
    """Number of cases ``expand`` would list, computed without listing them."""
    groups = math.prod(len(values) for values in _group_values(scenario, device))
    per_group = sum(len(strategies_for(variant, scenario.sweep.strategy)) for variant in scenario.variants)
    return groups * per_group


def _group_values(scenario: Scenario, device: str | None) -> list[list[object]]:
    """List the swept values of each CaseGroup field, in field order, with devices resolved and deduplicated."""
    sweep = scenario.sweep
    devices = [device] if device else sweep.device
    resolved = list(dict.fromkeys(resolve_device(name) for name in devices))
    return [resolved if key == "device" else getattr(sweep, key) for key in GROUP_KEYS]


def strategies_for(variant: str, requested: list[str]) -> list[str]:
    """Pick the requested strategies that apply to ``variant``, or its default when none does."""
    spec = VARIANTS[variant]
    chosen = [name for name in requested if name in spec.strategies()]
    return chosen or [spec.default_strategy]
