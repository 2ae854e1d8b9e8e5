"""Run the cases of a scenario and measure each one.

For each case group the runner builds one LayerSet (shared expert bank, router and
token attention block) or, for a model case, one ModelSet (a transformers model
whose feed-forward sites hold LayerSets), and one input batch. Then it measures
every variant on them:
output fidelity against the MoE oracle, FLOPs, parameters, peak memory and latency.
A case that cannot run is recorded as ``skipped`` with the reason. A case that
raises, runs out of memory, runs past ``measure.time_limit_s`` or outputs NaN is
recorded as ``failed``, ``oom``, ``timeout`` or ``nan`` with the error (see
meobench.failures), and the sweep goes on.
"""

from __future__ import annotations

import gc
import itertools
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Union

import torch

from meobench.allocator import apply_cpu_allocator
from meobench.cases import Case, CaseGroup
from meobench.costmodel import CaseShape, merged_weight_bytes
from meobench.devices import DTYPES, device_name, dtype_unsupported_reason, synchronize, unavailable_reason
from meobench.errors import ConfigError
from meobench.failures import Failure, classify_failure, release_after_oom, time_limit
from meobench.flopcheck import count_case
from meobench.flops import count_flops
from meobench.layers.variants import LayerSet, reference_variant, variant_spec
from meobench.memory import measure_peak_memory, tensor_bytes
from meobench.models import FAMILIES, ModelInputs, ModelSet, get_preset, make_model_inputs
from meobench.models.flopcount import count_model_case
from meobench.models.inputs import padding_mask
from meobench.profiling import ProfileSettings, profile_steps
from meobench.results import CaseResult
from meobench.scenario import Scenario
from meobench.shape_only import ShapeOnlyMode
from meobench.steps import InferenceStep, TrainStep, compile_forward, forward_function
from meobench.timing import TimingSettings, measure_latency

logger = logging.getLogger(__name__)

Step = Union[InferenceStep, TrainStep]

# Strategy whose output every other strategy of a MoE variant is checked against.
ORACLE_STRATEGY = "dense"


@dataclass
class CaseInputs:
    """One seeded input batch, shared by all variants of a case group."""

    x: torch.Tensor
    """Hidden states [B, L, D]."""
    attention_mask: torch.Tensor
    """[B, L], 1 for real tokens and 0 for padding."""
    task_ids: torch.Tensor
    """[B] task index of each sequence."""

    def call(self, module: torch.nn.Module) -> torch.Tensor:
        return module(self.x, self.attention_mask, self.task_ids)

    def call_with_aux_loss(self, module: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """Run ``module`` and also return its router's load-balancing loss (0 for the dense layer)."""
        if hasattr(module, "route_and_forward"):
            output, routing = module.route_and_forward(self.x, self.attention_mask, self.task_ids)
            return output, routing.aux_loss
        output = self.call(module)
        return output, output.new_zeros(())

    def tensors(self) -> list[torch.Tensor]:
        return [self.x, self.attention_mask, self.task_ids]


def make_inputs(group: CaseGroup, scenario: Scenario, device: str) -> CaseInputs | ModelInputs:
    """Seeded inputs for ``group``; the last ``padding_fraction`` of each sequence is padding."""
    if group.model is not None:
        return make_model_inputs(
            vocab_size=get_preset(group.model).config().vocab_size,
            batch_size=group.batch_size,
            seq_len=group.seq_len,
            padding_fraction=scenario.layer.padding_fraction,
            decoder_seq_len=_decoder_seq_len(group, scenario),
            num_tasks=scenario.layer.num_tasks,
            seed=scenario.seed + 1,
            device=device,
        )
    generator = torch.Generator().manual_seed(scenario.seed + 1)
    x = torch.randn(group.batch_size, group.seq_len, group.d_model, generator=generator)
    mask = padding_mask(group.batch_size, group.seq_len, scenario.layer.padding_fraction)
    task_ids = torch.arange(group.batch_size) % scenario.layer.num_tasks
    return CaseInputs(x.to(device, DTYPES[group.dtype]), mask.to(device), task_ids.to(device))


def _decoder_seq_len(group: CaseGroup, scenario: Scenario) -> int | None:
    if not FAMILIES[get_preset(group.model).family].encoder_decoder:
        return None
    return scenario.models.decoder_seq_len or group.seq_len


def build_weights(group: CaseGroup, scenario: Scenario, count_only: bool = False) -> LayerSet | ModelSet:
    """Build the shared weights of a group: a LayerSet, or a ModelSet for a model case (CPU, float32).

    ``count_only`` builds a ModelSet whose experts are not filled from the dense weights.
    """
    config = group.layer_config(scenario)
    if group.model is None:
        return LayerSet(config, seed=scenario.seed)
    pretrained = scenario.models.pretrained.get(group.model)
    return ModelSet(
        get_preset(group.model),
        placement=group.expert_kind,
        template=config,
        head=scenario.models.head,
        seed=scenario.seed,
        expert_noise=scenario.models.expert_noise,
        pretrained=Path(pretrained) if pretrained else None,
        fill_experts=not count_only,
        check_memory=scenario.models.check_memory,
    )


# Shared state of a case group's variants: one layer's weights or one model's, and one input batch.
Weights = LayerSet | ModelSet
Inputs = CaseInputs | ModelInputs


def skip_reason(group: CaseGroup, scenario: Scenario) -> str | None:
    """Why the cases of ``group`` cannot run here (absent device, unsupported dtype,
    impossible configuration), or None when they can."""
    reason = unavailable_reason(group.device) or dtype_unsupported_reason(group.device, group.dtype)
    if reason is None:
        try:
            group.layer_config(scenario)
        except ConfigError as error:
            reason = str(error)
    if reason is None and group.model is not None:
        reason = _model_skip_reason(group, scenario)
    return reason


def _model_skip_reason(group: CaseGroup, scenario: Scenario) -> str | None:
    limit = get_preset(group.model).max_positions()
    longest = max(group.seq_len, _decoder_seq_len(group, scenario) or 0)
    if limit is not None and longest > limit:
        return f"seq_len {longest} exceeds the {limit} positions of model {group.model}; use seq_len <= {limit}"
    return None


class Runner:
    """Measures cases of one scenario, yielding one CaseResult per case as it finishes.

    With ``count_only`` it fills only parameters and FLOP figures: layers are built
    inside a ShapeOnlyMode (no initialisation) and nothing is run for real or timed.
    """

    def __init__(self, scenario: Scenario, count_only: bool = False, trace_dir: Path | None = None):
        """``trace_dir``: write each case's profiler trace, operator table and memory timeline there."""
        self.scenario = scenario
        self.count_only = count_only
        m = scenario.measure
        self.timing = TimingSettings(m.warmup, m.min_repeats, m.max_repeats, m.max_time_s, m.target_rel_iqr)
        self.profile = ProfileSettings(m.profile_wait, m.profile_warmup, m.profile_active, trace_dir)

    def iterate(
        self, cases: Iterable[Case], on_case_start: Callable[[Case], None] | None = None
    ) -> Iterator[CaseResult]:
        """Run ``cases`` in order; variants of one group share weights and inputs."""
        apply_cpu_allocator(self.scenario.cpu_allocator)
        threads = torch.get_num_threads()
        if self.scenario.threads:
            torch.set_num_threads(self.scenario.threads)
        try:
            for group, group_cases in itertools.groupby(cases, key=lambda case: case.group):
                yield from self._run_group(group, list(group_cases), on_case_start)
        finally:
            torch.set_num_threads(threads)

    def _run_group(
        self, group: CaseGroup, cases: list[Case], on_case_start: Callable[[Case], None] | None
    ) -> Iterator[CaseResult]:
        device = group.device
        reason = skip_reason(group, self.scenario)
        if reason is not None:
            for case in cases:
                if on_case_start:
                    on_case_start(case)
                yield self.unmeasured_result(case, "skipped", reason)
            return

        failure = None
        try:
            layers = self._build_layers(group)
            inputs = make_inputs(group, self.scenario, device)
        except ConfigError as error:
            # A model that cannot take this placement (a gated T5 block as one ffn expert).
            for case in cases:
                if on_case_start:
                    on_case_start(case)
                yield self.unmeasured_result(case, "skipped", str(error))
            return
        except Exception as error:  # noqa: BLE001 - the group's cases fail, the sweep goes on
            logger.exception("building the layers and inputs of %s failed", cases[0].case_id)
            failure = classify_failure(error, device)
        if failure is not None:
            for case in cases:
                if on_case_start:
                    on_case_start(case)
                yield self._failed_result(self._new_result(case), failure)
            return

        references = _References(layers, inputs)
        try:
            for case in cases:
                if on_case_start:
                    on_case_start(case)
                yield self._run_case(case, layers, inputs, references)
        finally:
            del layers, inputs, references
            if not self.count_only:
                # Layers built for counting hold no initialised memory worth a collection.
                _release_memory(device)

    def _build_layers(self, group: CaseGroup) -> Weights:
        if self.count_only:
            with ShapeOnlyMode():
                return build_weights(group, self.scenario, count_only=True).to(device=group.device, dtype=DTYPES[group.dtype])
        return build_weights(group, self.scenario).to(device=group.device, dtype=DTYPES[group.dtype])

    def unmeasured_result(self, case: Case, status: str, error: str) -> CaseResult:
        """Build the row of a case with no measurement: ``skipped`` with the reason, or a failure with the error."""
        return self._new_result(case, status=status, error=error)

    def _new_result(self, case: Case, **fields: object) -> CaseResult:
        device = case.group.device
        return CaseResult(
            scenario=self.scenario.name,
            case=case,
            mode=self.scenario.mode,
            device_name=device_name(device) if unavailable_reason(device) is None else "",
            threads=torch.get_num_threads(),
            **fields,
        )

    def _run_case(self, case: Case, layers: Weights, inputs: Inputs, references: _References) -> CaseResult:
        result = self._new_result(case)
        failure = None
        try:
            with time_limit(self.scenario.measure.time_limit_s):
                if self.count_only:
                    self._count(result, layers.build(case.variant, case.strategy), layers, inputs)
                else:
                    self._measure(result, layers, inputs, references)
        except ConfigError as error:
            result.status, result.error = "skipped", str(error)
        except Exception as error:  # noqa: BLE001 - one failing case must not end the sweep
            logger.exception("case %s failed", case.case_id)
            failure = classify_failure(error, case.group.device)
        # Outside the except block, so the traceback no longer keeps the case's tensors alive.
        if failure is not None:
            self._failed_result(result, failure)
        return result

    def _failed_result(self, result: CaseResult, failure: Failure) -> CaseResult:
        result.status, result.error, result.free_mem_bytes = failure.status, failure.error, failure.free_mem_bytes
        if failure.status == "oom":
            release_after_oom(result.case.group.device)
        return result

    def _count(self, result: CaseResult, module: torch.nn.Module, layers: Weights, inputs: Inputs) -> None:
        """Fill parameters and FLOP figures: every counter and the analytic model in inference mode."""
        case, group = result.case, result.case.group
        counts = layers.count_parameters(case.variant)
        result.params, result.active_params = counts.total, counts.active
        if self.scenario.mode != "inference":
            # NOTE: the analytic model and the second and third counters cover inference only.
            step = self._build_step(module, layers, inputs, group.device)
            try:
                result.flops = count_flops(step)
            finally:
                # Counting ran an optimizer step on weights the other variants share.
                step.restore()
            return
        layers.eval()
        element_bytes = DTYPES[group.dtype].itemsize
        if group.model is not None:
            report = count_model_case(module, inputs, self.scenario.models.head, element_bytes)
            result.flops, result.flop_report = report.flop_counter, report
            return
        shape = CaseShape(group.batch_size, group.seq_len, element_bytes)
        arguments = (inputs.x, inputs.attention_mask, inputs.task_ids)
        report = count_case(module, arguments, layers.config, case.variant, case.strategy, shape)
        result.flops, result.flop_report = report.flop_counter, report

    def _measure(self, result: CaseResult, layers: Weights, inputs: Inputs, references: _References) -> None:
        case, device = result.case, result.case.group.device
        module = layers.build(case.variant, case.strategy)
        self._count(result, module, layers, inputs)

        # Fidelity uses the deterministic eval-mode output (no routing noise).
        layers.eval()
        with torch.no_grad():
            output = inputs.call(module)
        if not bool(torch.isfinite(output).all()):
            result.status, result.error = "nan", "output contains NaN or Inf"
            return
        reference = references.output_for(case.variant)
        if reference is not None:
            result.fidelity_rel_err = relative_error(output, reference)
        del output

        step = self._build_step(module, layers, inputs, device)
        try:
            self._measure_step(result, step, module, inputs)
        finally:
            if isinstance(step, TrainStep):
                # The other variants of the group share these weights.
                step.restore()

    def _build_step(self, module: torch.nn.Module, layers: Weights, inputs: Inputs, device: str) -> Step:
        """Build the timed unit of work: a forward pass, or a training step in train mode."""
        forward = forward_function(module)
        if self.scenario.mode == "inference":
            layers.eval()
            return InferenceStep(forward, inputs)
        layers.train()
        return TrainStep(module, forward, inputs, device)

    def _measure_step(self, result: CaseResult, step: Step, module: torch.nn.Module, inputs: Inputs) -> None:
        """Compile ``step`` when asked, then measure its memory, latency and phases."""
        case, device = result.case, result.case.group.device
        if self.scenario.compile:
            # FLOPs were counted on the eager module: FlopCounterMode does not see inside compiled code.
            step.forward = compile_forward(step.forward, device, result.tokens)
            result.compile_s = _time_one_call(step, device)

        resident = [*module.parameters(), *inputs.tensors()]
        if isinstance(step, TrainStep):
            resident += step.optimizer_state_tensors()
        peak = measure_peak_memory(step, device, tensor_bytes(resident))
        result.peak_mem_bytes, result.peak_mem_method = peak.peak_bytes, peak.method
        result.peak_mem_abs_bytes, result.mem_negative_alloc = peak.absolute_bytes, peak.negative_bytes > 0
        result.mem_model_bytes = _model_memory_bytes(case, self.scenario)
        result.warnings.extend(peak.warnings)

        result.measurement = measure_latency(step, device, self.timing)
        result.warnings.extend(result.measurement.warnings)
        if isinstance(step, TrainStep):
            result.part_medians_s = step.part_medians_s(result.measurement.repeats)

        if self.profile.active:
            result.profile = profile_steps(step, device, self.profile, case.case_id)
            if self.scenario.compile:
                result.warnings.append("torch.compile drops record_function ranges, so the phase columns are empty")


class _References:
    """Lazily computed oracle outputs, one per reference MoE variant of a group."""

    def __init__(self, layers: Weights, inputs: Inputs):
        self.layers = layers
        self.inputs = inputs
        self.outputs: dict[str, torch.Tensor] = {}

    def output_for(self, variant: str) -> torch.Tensor | None:
        if variant_spec(variant).family == "dense":
            return None
        reference = reference_variant(variant)
        if reference not in self.outputs:
            module = self.layers.build(reference, ORACLE_STRATEGY)
            self.layers.eval()
            with torch.no_grad():
                self.outputs[reference] = self.inputs.call(module)
        return self.outputs[reference]


def relative_error(output: torch.Tensor, reference: torch.Tensor) -> float:
    """||output - reference|| / ||reference|| computed in float64."""
    output, reference = output.double(), reference.double()
    norm = reference.norm()
    if norm == 0:
        return float((output - reference).norm())
    return float((output - reference).norm() / norm)


def fill_speedups(results: list[CaseResult]) -> None:
    """Set speedup_vs_moe: the fastest strategy of the reference MoE variant in the same group, over this latency."""
    fastest: dict[tuple[CaseGroup, str], float] = {}
    for result in results:
        if result.status == "ok" and result.latency_s:
            key = (result.case.group, result.case.variant)
            fastest[key] = min(fastest.get(key, float("inf")), result.latency_s)
    for result in results:
        reference = fastest.get((result.case.group, reference_variant(result.case.variant)))
        if result.status == "ok" and result.latency_s and reference:
            result.speedup_vs_moe = reference / result.latency_s


def _time_one_call(step: Step, device: str) -> float:
    synchronize(device)
    start = time.perf_counter()
    step()
    synchronize(device)
    return time.perf_counter() - start


def _model_memory_bytes(case: Case, scenario: Scenario) -> int | None:
    """Memory the cost model expects for ``case``: MEO's merged weights, or None for other families."""
    if variant_spec(case.variant).family != "meo" or case.group.model is not None:
        # NOTE: model cases would need the merged weights of every site; not modelled yet.
        return None
    group = case.group
    return merged_weight_bytes(group.layer_config(scenario), group.batch_size, DTYPES[group.dtype].itemsize)


def _release_memory(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()

