"""Scenario files: a typed schema, a YAML loader with located errors, and the sweep.

A scenario is data. It is read with ``yaml.safe_load`` semantics (no Python tags),
and unknown keys are rejected with the nearest valid key.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from meobench.errors import ScenarioError
from meobench.layers.config import ACTIVATIONS, EXPERT_KINDS
from meobench.layers.variants import ALL_VARIANTS
from meobench.models.presets import PRESETS

DTYPES = ("float32", "float64", "bfloat16", "float16")
DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# Per-case limit: far above the 2 s default timing budget, so it stops hung cases, not slow ones.
DEFAULT_TIME_LIMIT_S = 600.0


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Sweep(_Strict):
    """Values to sweep; the cases are the cartesian product of all lists.

    Each key takes one value or a list of values.
    """

    num_experts: list[int] = Field(default=[8], description="n, experts in the bank.")
    top_k: list[int] = Field(default=[2], description="m, experts selected per routing decision.")
    batch_size: list[int] = Field(default=[8], description="Sequences per forward pass.")
    seq_len: list[int] = Field(default=[128], description="Tokens per sequence.")
    d_model: list[int] = Field(default=[768], description="Input width.")
    d_ff: list[int] = Field(default=[3072], description="Linear expert output width, or FFN hidden width.")
    expert_kind: list[Literal["linear", "ffn", "glu"]] = Field(
        default=["linear"], description="Expert kind: linear, ffn, or glu (gated, as SwiGLU)."
    )
    strategy: list[str] = Field(
        default=[],
        description="Strategies to run; each variant runs those that apply to it, or its default when none does.",
    )
    dtype: list[Literal["float32", "float64", "bfloat16", "float16"]] = Field(default=["float32"])
    device: list[str] = Field(default=["auto"], description="auto, cpu, cuda, cuda:N or mps.")
    model: list[str] = Field(
        default=[],
        description="Model presets (see meobench list); when given, every case is a whole model and "
        "d_model, d_ff come from the preset.",
    )
    placement: list[Literal["linear", "ffn"]] = Field(
        default=["linear"],
        description="Model cases: linear = each feed-forward linear is a routed layer, ffn = the whole block is one "
        "expert. It sets expert_kind. Native MoE presets always run as ffn.",
    )

    @field_validator("*", mode="before")
    @classmethod
    def _scalar_to_list(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None:
            raise ValueError("is empty; give a value or a list of values")
        if not isinstance(value, list):
            return [value]
        # An empty strategy list means each variant's default strategy, and an empty model
        # list means layer cases, so both still give cases.
        if not value and info.field_name not in ("strategy", "model"):
            raise ValueError("is an empty list, so the sweep would have no cases; give at least one value")
        return value

    @field_validator("num_experts", "top_k", "batch_size", "seq_len", "d_model", "d_ff")
    @classmethod
    def _positive(cls, values: list[int]) -> list[int]:
        for value in values:
            if value < 1:
                raise ValueError(f"contains {value}, but every value must be a positive integer")
        return values

    @field_validator("model")
    @classmethod
    def _model_names(cls, values: list[str]) -> list[str]:
        for value in values:
            if value not in PRESETS:
                raise ValueError(
                    f"contains unknown model preset {value!r}{_did_you_mean(str(value), PRESETS)}; "
                    f"valid presets: {', '.join(PRESETS)}"
                )
        return values

    @field_validator("device")
    @classmethod
    def _device_names(cls, values: list[str]) -> list[str]:
        for value in values:
            if not DEVICE_PATTERN.match(str(value)):
                raise ValueError(f"contains {value!r}, which is not a device; use auto, cpu, cuda, cuda:N or mps")
        return values


class LayerOptions(_Strict):
    """Options shared by every case's layers."""

    bias: bool = True
    activation: Literal["relu", "gelu", "silu"] = "gelu"
    noisy_gating: bool = True
    aux_loss_weight: float = Field(default=0.01, ge=0)
    num_tasks: int = Field(default=4, ge=1)
    token_attention_reduction: int = Field(default=64, ge=1)
    padding_fraction: float = Field(
        default=0.0, ge=0.0, lt=1.0, description="Share of each sequence's last tokens masked as padding."
    )


class ModelOptions(_Strict):
    """Options of model cases (sweep.model)."""

    head: Literal["lm", "bare"] = Field(
        default="lm",
        description="lm: with the language-model head (BERT's masked-LM head); bare: the model without a head.",
    )
    expert_noise: float = Field(
        default=0.01,
        ge=0,
        description="Experts 1..n-1 get the dense weights plus this relative scale of seeded Gaussian noise.",
    )
    decoder_seq_len: int | None = Field(
        default=None, ge=1, description="Decoder tokens of T5 and BART; default: seq_len."
    )
    check_memory: bool = Field(
        default=True,
        description="Skip a model whose estimated float32 weights exceed the host's available memory "
        "(Mixtral 8x7B needs about 174 GiB); false builds it anyway.",
    )
    pretrained: dict[str, str] = Field(
        default={},
        description="Preset name -> local model directory whose weights replace the random ones "
        "(read with local_files_only).",
    )

    @field_validator("pretrained")
    @classmethod
    def _pretrained_presets(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if name not in PRESETS:
                raise ValueError(
                    f"names unknown model preset {name!r}{_did_you_mean(str(name), PRESETS)}; "
                    f"valid presets: {', '.join(PRESETS)}"
                )
        return value


class MeasureOptions(_Strict):
    """Timing settings applied to each case."""

    warmup: int = Field(default=2, ge=0, description="Untimed forward passes before timing.")
    min_repeats: int = Field(default=5, ge=1, description="Timed passes always taken.")
    max_repeats: int = Field(default=50, ge=1, description="Timed passes at most.")
    max_time_s: float = Field(default=2.0, gt=0, description="Timing budget per case, in seconds.")
    target_rel_iqr: float = Field(
        default=0.05, ge=0, description="Stop early once IQR / median falls below this (0 disables)."
    )
    profile_wait: int = Field(default=0, ge=0, description="Profiler schedule: calls skipped before recording.")
    profile_warmup: int = Field(default=1, ge=0, description="Profiler schedule: calls recorded and discarded.")
    profile_active: int = Field(
        default=3, ge=0, description="Profiler schedule: calls the phase times average over (0 turns phases off)."
    )
    time_limit_s: float | None = Field(
        default=DEFAULT_TIME_LIMIT_S,
        gt=0,
        allow_inf_nan=False,
        description="Wall-clock limit for one case, in seconds; a case over it gets status timeout. null: no limit.",
    )

    @model_validator(mode="after")
    def _repeat_bounds(self) -> MeasureOptions:
        if self.min_repeats > self.max_repeats:
            raise ValueError(
                f"min_repeats={self.min_repeats} is larger than max_repeats={self.max_repeats}; "
                "raise max_repeats or lower min_repeats"
            )
        return self


# Metrics a gate can hold to a maximum regression.
GATED_METRICS = ("latency",)


def parse_fraction(value: Any) -> float:
    """Read a relative change written as ``10%`` or ``0.1``; raises ValueError otherwise."""
    text = str(value).strip()
    try:
        fraction = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise ValueError(f"{value!r} is not a fraction; write it as a percentage such as 10% or as 0.1") from None
    if not 0 <= fraction < 10:
        raise ValueError(f"{value!r} is out of range; use a value from 0% to below 1000%")
    return fraction


class GateOptions(_Strict):
    """Thresholds ``meobench gate`` applies to this scenario's runs; command-line options override them."""

    max_regression: dict[Literal["latency"], float] = Field(
        default={"latency": 0.10},
        description="Largest tolerated slowdown per metric, as a fraction or percentage of the baseline median.",
    )
    latency_floor_ms: float = Field(
        default=0.05, ge=0, description="Latency changes smaller than this, in ms, never count as regressions."
    )
    alpha: float = Field(
        default=0.05, gt=0, lt=1, description="Significance level of the Mann-Whitney U test on raw samples."
    )

    @field_validator("max_regression", mode="before")
    @classmethod
    def _fractions(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {metric: parse_fraction(fraction) for metric, fraction in value.items()}
        return value


class Scenario(_Strict):
    """A declarative benchmark: variants, a sweep, a mode and measurement settings."""

    name: str = Field(description="Short name used in output paths.")
    description: str = ""
    variants: list[str] = Field(description="Variant names to build for each case.")
    mode: Literal["inference", "train"] = "inference"
    compile: bool = Field(
        default=False, description="Run each case through torch.compile; compile time is reported apart."
    )
    threads: int | None = Field(default=None, ge=1, description="torch intra-op threads; None keeps torch's default.")
    cpu_allocator: Literal["retain", "system"] = Field(
        default="retain",
        description=(
            "retain: on glibc, keep freed memory in the process so large CPU tensors do not pay page faults "
            "on every call (see meobench/allocator.py); system: the C library's own behaviour."
        ),
    )
    seed: int = 0
    sweep: Sweep = Sweep()
    layer: LayerOptions = LayerOptions()
    models: ModelOptions = ModelOptions()
    measure: MeasureOptions = MeasureOptions()
    gates: GateOptions = GateOptions()

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME_PATTERN.match(value):
            raise ValueError(
                f"{value!r} is not a valid name; use letters, digits, '.', '_' and '-', starting with a letter or digit"
            )
        return value

    @field_validator("variants", mode="before")
    @classmethod
    def _variants(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list):
            if not value:
                raise ValueError("is an empty list; name at least one variant")
            for variant in value:
                # A non-string item is left to the list[str] type check, which names its position.
                if isinstance(variant, str) and variant not in ALL_VARIANTS:
                    raise ValueError(
                        f"contains unknown variant {variant!r}{_did_you_mean(str(variant), ALL_VARIANTS)}; "
                        f"valid variants: {', '.join(ALL_VARIANTS)}"
                    )
        return value


def _cross_check(scenario: Scenario) -> list[tuple[tuple[Any, ...], str]]:
    """Problems that involve several keys, each with the key path to point at."""
    problems = []
    sweep = scenario.sweep
    known = {s for v in scenario.variants for s in ALL_VARIANTS[v].strategies()}
    for index, strategy in enumerate(sweep.strategy):
        if strategy not in known:
            problems.append(
                (
                    ("sweep", "strategy", index),
                    f"strategy {strategy!r} applies to none of the variants {', '.join(scenario.variants)}"
                    f"{_did_you_mean(strategy, known)}; valid strategies for them: {', '.join(sorted(known))}",
                )
            )
    if not any(k <= n for k in sweep.top_k for n in sweep.num_experts):
        problems.append(
            (
                ("sweep", "top_k"),
                f"every top_k {sweep.top_k} is larger than every num_experts {sweep.num_experts}, "
                "so no case can run; use top_k <= num_experts",
            )
        )
    if sweep.model:
        for key in ("d_model", "d_ff", "expert_kind"):
            # A dumped scenario lists every key with its default; only a changed value is a mistake.
            if key in sweep.model_fields_set and getattr(sweep, key) != Sweep.model_fields[key].default:
                problems.append(
                    (
                        ("sweep", key),
                        f"has no effect because sweep.model is set and the preset fixes {key}; "
                        "remove it, or move the model cases to their own scenario",
                    )
                )
    if not sweep.model:
        for index, variant in enumerate(scenario.variants):
            if ALL_VARIANTS[variant].family == "native":
                problems.append(
                    (
                        ("variants", index),
                        f"variant {variant!r} runs a native MoE model's own sparse block, so it needs sweep.model "
                        "with a native MoE preset (mixtral-tiny, olmoe-tiny, ...); add one, or drop the variant",
                    )
                )
    if "meo-token" in scenario.variants and not sweep.model:
        reduction = scenario.layer.token_attention_reduction
        for index, d_model in enumerate(sweep.d_model):
            if d_model % reduction:
                problems.append(
                    (
                        ("sweep", "d_model", index),
                        f"d_model {d_model} is not divisible by layer.token_attention_reduction={reduction}, "
                        "so meo-token cannot be built; use a multiple of the reduction or change the reduction",
                    )
                )
    return problems


def _did_you_mean(value: str, choices: Any) -> str:
    matches = difflib.get_close_matches(value, list(choices), n=1)
    return f" (did you mean {matches[0]!r}?)" if matches else ""


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file; any problem raises ScenarioError with its location."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScenarioError(f"{path}: scenario file not found; check the path.") from None
    except IsADirectoryError:
        raise ScenarioError(
            f"{path}: is a folder, not a scenario file; pass one YAML file, such as {path / 'scaling.yaml'}."
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ScenarioError(f"{path}: cannot read the scenario file ({error}).") from None
    return parse_scenario(text, source=str(path))


def parse_scenario(text: str, source: str = "<scenario>") -> Scenario:
    """Validate scenario YAML text; ``source`` names it in error messages."""
    try:
        document = yaml.safe_load(text)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.constructor.ConstructorError as error:
        # safe_load builds only plain data; a Python tag (!!python/object, ...) ends here.
        raise ScenarioError(
            f"{source}{_mark(error)}: YAML tag rejected: {error.problem}. "
            "Scenario files are plain data; remove the tag."
        ) from None
    except yaml.MarkedYAMLError as error:
        problem = error.problem or error.context or "invalid YAML"
        raise ScenarioError(
            f"{source}{_mark(error)}: YAML syntax error: {problem}. Fix the YAML at that position."
        ) from None
    except yaml.YAMLError as error:
        raise ScenarioError(f"{source}: YAML error: {error}.") from None
    except RecursionError:
        raise ScenarioError(
            f"{source}: the YAML is nested too deeply to read; a scenario nests three levels at most "
            "(sweep: key: [values])."
        ) from None
    if not isinstance(document, dict):
        kind = "empty" if document is None else f"a {type(document).__name__}"
        raise ScenarioError(
            f"{source}: the scenario is {kind}, but it must be a mapping with at least 'name' and 'variants'."
        )
    try:
        scenario = Scenario.model_validate(document)
    except ValidationError as error:
        raise ScenarioError(_format_validation_error(error, root, source)) from None
    problems = _cross_check(scenario)
    if problems:
        lines = [_problem_header(source, len(problems))]
        lines += [_located(root, loc, message) for loc, message in problems]
        raise ScenarioError("\n".join(lines))
    return scenario


def _mark(error: yaml.MarkedYAMLError) -> str:
    """``:line:column`` of a YAML error (1-based), or nothing when PyYAML gives no position."""
    mark = error.problem_mark or error.context_mark
    return f":{mark.line + 1}:{mark.column + 1}" if mark else ""


def _problem_header(source: str, count: int) -> str:
    return f"{source}: invalid scenario ({count} problem{'s' if count > 1 else ''}):"


def _located(root: yaml.Node | None, loc: tuple[Any, ...], message: str) -> str:
    line = _line_of(root, loc)
    where = f"line {line}, " if line else ""
    return f"  {where}{_key_path(loc)}: {message}."


def _format_validation_error(error: ValidationError, root: yaml.Node | None, source: str) -> str:
    lines = [_problem_header(source, error.error_count())]
    for item in error.errors():
        loc = tuple(item["loc"])
        if item["type"] == "extra_forbidden":
            valid = _valid_keys(loc[:-1])
            hint = _did_you_mean(str(loc[-1]), valid)
            message = f"unknown key{hint}; valid keys here: {', '.join(valid)}"
        elif item["type"] == "missing":
            message = "required key is missing; add it"
        else:
            value = item.get("input")
            shown = "" if isinstance(value, (dict, list)) or value is None else f" (got {value!r})"
            message = item["msg"].removeprefix("Value error, ") + shown
        lines.append(_located(root, loc, message))
    return "\n".join(lines)


def _key_path(loc: tuple[Any, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "(top level)"


def _valid_keys(loc: tuple[Any, ...]) -> list[str]:
    model: type[BaseModel] = Scenario
    for part in loc:
        annotation = model.model_fields[part].annotation if part in model.model_fields else None
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
        else:
            return []
    return list(model.model_fields)


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """1-based line of the YAML node at ``loc``, or of its deepest existing parent."""
    if node is None:
        return None
    line = node.start_mark.line + 1
    for part in loc:
        child = None
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if key_node.value == part:
                    # An unknown key points at the key itself; anything else at its value.
                    child = value_node if part != loc[-1] else key_node
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            child = node.value[part]
        if child is None:
            break
        node = child
        line = node.start_mark.line + 1
    return line


def dump_scenario(scenario: Scenario) -> dict[str, Any]:
    """Convert the scenario to plain data with every default filled in."""
    return scenario.model_dump(mode="json")


__all__ = ["ACTIVATIONS", "DTYPES", "EXPERT_KINDS", "Scenario", "load_scenario", "parse_scenario", "dump_scenario"]
