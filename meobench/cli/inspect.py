"""Commands that inspect without measuring: ``validate``, ``list`` and ``env``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

import meobench
from meobench.cases import count_cases
from meobench.cli.common import app, console, reports_errors
from meobench.devices import resolve_device
from meobench.environment import collect_environment
from meobench.errors import MeobenchError
from meobench.layers import ALL_VARIANTS, MERGE_STRATEGIES, MOE_STRATEGIES
from meobench.layers.variants import NATIVE_STRATEGIES
from meobench.models import PRESETS, count_dense_parameters
from meobench.scenario import Scenario, load_scenario


@app.command()
@reports_errors
def validate(
    scenario: Path = typer.Argument(..., help="Scenario YAML file to check."),
) -> None:
    """Check a scenario file and report its number of cases, without running anything."""
    spec = load_scenario(scenario)
    console.print(f"{scenario}: valid scenario {spec.name!r} with {count_cases(spec)} cases.", highlight=False)


@app.command("list")
def list_choices() -> None:
    """List the layer variants, execution strategies, model presets and shipped scenarios."""
    variants = Table(title="Variants")
    for header in ("variant", "family", "routing level", "default strategy", "strategies"):
        variants.add_column(header)
    for name, spec in ALL_VARIANTS.items():
        variants.add_row(name, spec.family, spec.level or "-", spec.default_strategy, ", ".join(spec.strategies()))
    console.print(variants)

    strategies = Table(title="Strategies")
    strategies.add_column("strategy")
    strategies.add_column("applies to")
    strategies.add_column("what it does")
    for name, function in sorted(MOE_STRATEGIES.items()):
        strategies.add_row(name, "moe-*", _first_line(function.__doc__))
    for name, function in sorted(MERGE_STRATEGIES.items()):
        strategies.add_row(name, "meo-*", _first_line(function.__doc__))
    for name in NATIVE_STRATEGIES:
        strategies.add_row(name, "native", "transformers' experts implementation of that name (native MoE presets)")
    console.print(strategies)

    console.print(presets_table())

    scenarios = Table(title="Shipped scenarios")
    scenarios.add_column("file")
    scenarios.add_column("description")
    for path in shipped_scenarios():
        try:
            description = load_scenario(path).description
        except MeobenchError as error:
            description = f"[red]invalid: {error}[/]"
        scenarios.add_row(str(path), description)
    console.print(scenarios)


def presets_table() -> Table:
    """Model presets with their sizes, counted from the config on the meta device."""
    table = Table(
        title="Model presets (sweep.model)",
        caption="t5-v1_1 presets count about 16M (small) and 25M (base) below their published sizes: "
        "transformers 5.25 ties T5's LM head to the embeddings, where v1.1 has its own.",
    )
    headers = (
        "preset",
        "family",
        "hidden",
        "ffn",
        "native experts",
        "params bare (M)",
        "params with LM head (M)",
        "published (M)",
    )
    for header in headers:
        table.add_column(header, justify="left" if header in ("preset", "family") else "right")
    for name, preset in PRESETS.items():
        hidden, ffn = preset.widths()
        published = "-" if preset.published_params is None else f"{preset.published_params / 1e6:.0f}"
        experts = "-"
        if preset.native_moe:
            num_experts, top_k = preset.native_experts()
            experts = f"{num_experts}, top-{top_k}"
        table.add_row(
            name,
            preset.family,
            str(hidden),
            str(ffn),
            experts,
            f"{count_dense_parameters(preset, 'bare') / 1e6:.1f}",
            f"{count_dense_parameters(preset, 'lm') / 1e6:.1f}",
            published,
        )
    return table


def shipped_scenarios() -> list[Path]:
    """Scenario files in the scenarios/ folder beside the meobench package."""
    folder = Path(meobench.__file__).resolve().parent.parent / "scenarios"
    return sorted(folder.glob("*.yaml"))


def _first_line(text: Optional[str]) -> str:
    return (text or "").strip().splitlines()[0] if text else ""


@app.command()
def env() -> None:
    """Show the software and hardware meobench would record with a run."""
    table = Table(title="Environment", show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    # A run records its scenario's policy; show the default one.
    policy = Scenario.model_fields["cpu_allocator"].default
    for key, value in collect_environment([resolve_device("auto")], cpu_allocator=policy).items():
        table.add_row(key, str(value))
    console.print(table)
