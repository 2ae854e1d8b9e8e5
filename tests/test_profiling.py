import gzip
import json
import time

import pandas as pd
import pytest
import torch
from torch.autograd.profiler_util import FunctionEvent
from torch.profiler import record_function
from torch_tb_profiler.consts import WORKER_PATTERN
from torch_tb_profiler.profiler.data import RunProfileData

from meobench.layers.variants import VARIANTS
from meobench.profiling import ProfileSettings, phase_times, profile_steps
from meobench.runner import CaseInputs
from meobench.steps import InferenceStep, forward_function
from tests.conftest import make_layers

# Phases each variant marks with record_function (default strategies).
EXPECTED_PHASES = {
    "dense": {"expert"},
    "moe-token": {"router", "dispatch", "expert", "combine"},
    "moe-sequence": {"router", "dispatch", "expert", "combine"},
    "moe-task": {"router", "dispatch", "expert", "combine"},
    "meo-sequence": {"router", "merge", "expert"},
    "meo-token": {"token_attention", "router", "merge", "expert"},
    "meo-task": {"router", "merge", "expert"},
}


def make_inputs(batch: int = 2, seq_len: int = 8, d_model: int = 32) -> CaseInputs:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(batch, seq_len, d_model, generator=generator)
    return CaseInputs(x, torch.ones(batch, seq_len, dtype=torch.long), torch.arange(batch) % 4)


def load_trace(path) -> dict:
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    return json.loads(data)


@pytest.fixture(scope="module")
def traced(tmp_path_factory):
    """Profile every variant once with trace output; return the output folder and summaries."""
    out = tmp_path_factory.mktemp("traces")
    layers = make_layers().eval()
    inputs = make_inputs()
    summaries = {}
    settings = ProfileSettings(wait=1, warmup=1, active=2, out_dir=out)
    for variant in VARIANTS:
        step = InferenceStep(forward_function(layers.build(variant)), inputs)
        summaries[variant] = profile_steps(step, "cpu", settings, case_id=variant)
    return out, summaries


def test_phases_in_trace_of_every_variant(traced):
    out, _ = traced
    for variant, phases in EXPECTED_PHASES.items():
        chrome = load_trace(out / "chrome" / f"{variant}.json")
        annotations = {event["name"] for event in chrome["traceEvents"] if event.get("cat") == "user_annotation"}
        assert phases <= annotations, variant


def test_phase_columns_match_marked_phases(traced):
    _, summaries = traced
    for variant, phases in EXPECTED_PHASES.items():
        assert set(summaries[variant].phase_s) == phases, variant
        assert all(seconds >= 0 for seconds in summaries[variant].phase_s.values()), variant


def test_trace_files_follow_plugin_naming(traced):
    out, _ = traced
    files = sorted((out / "traces").iterdir())
    assert len(files) == len(VARIANTS)
    workers = set()
    for path in files:
        match = WORKER_PATTERN.match(path.name)
        assert match, path.name
        workers.add(match.group(1))
    assert workers == set(VARIANTS)


def test_cpu_trace_loads_in_plugin_parser(traced):
    out, _ = traced
    path = next((out / "traces").glob("meo-token.*.pt.trace.json"))
    trace = load_trace(path)
    # Fields torch-tb-profiler's RunProfileData reads before anything else.
    assert "traceEvents" in trace
    assert "schemaVersion" in trace
    categories = {event.get("cat") for event in trace["traceEvents"]}
    assert {"cpu_op", "user_annotation", "cpu_instant_event"} <= categories  # [memory] events are instants
    profile = RunProfileData.from_json("meo-token", None, trace)
    profile.process()
    profile.analyze()
    # wait=1, warmup=1, active=2: the active steps are ProfilerStep#2 and #3.
    assert profile.steps_names == ["2", "3"]
    assert profile.has_kernel is False
    assert profile.memory_snapshot is not None


def test_traced_run_writes_operators_and_timeline(traced):
    out, summaries = traced
    frame = pd.read_csv(out / "operators" / "moe-token.csv")
    assert list(frame.columns) == [
        "rank", "operator", "calls_per_step", "self_cpu_ms", "cpu_total_ms", "self_device_ms", "device_total_ms",
    ]  # fmt: skip
    assert frame["rank"].tolist() == list(range(1, len(frame) + 1))
    assert frame["self_cpu_ms"].is_monotonic_decreasing
    assert not frame["operator"].str.startswith("ProfilerStep").any()
    assert (out / "memory" / "moe-token.html").stat().st_size > 0
    assert out / "chrome" / "moe-token.json" in summaries["moe-token"].files


def test_top_operator_calls_per_step():
    a = torch.ones(64, 64)

    def three_products():
        for _ in range(3):
            torch.mm(a, a)

    summary = profile_steps(three_products, "cpu", ProfileSettings(warmup=1, active=2), case_id="mm")
    by_name = {row.name: row for row in summary.operators}
    # 3 calls in each of the 2 active steps: 6 / 2 = 3 per step.
    assert by_name["aten::mm"].calls_per_step == 3.0
    assert summary.phase_s == {}
    assert summary.files == ()


def test_sleeping_phase_shows_up():
    def sleepy():
        with record_function("expert"):
            time.sleep(0.02)

    summary = profile_steps(sleepy, "cpu", ProfileSettings(warmup=1, active=3), case_id="sleep")
    # sleep() never returns early, so the range and the call last at least 20 ms.
    assert summary.phase_s["expert"] >= 0.02
    assert summary.call_s >= 0.02


def _event(event_id: int, name: str, start_us: float, end_us: float, parent: FunctionEvent | None = None):
    event = FunctionEvent(event_id, name, thread=0, start_us=start_us, end_us=end_us)
    if parent is not None:
        event.set_cpu_parent(parent)
        parent.append_cpu_child(event)
    return event


def test_phase_times_hand_computed():
    # Two steps of 100 us. Step 1: router 0-30 (an operator inside), expert 30-50,
    # combine 50-60, expert 60-90 with a combine 70-80 nested inside it.
    # Step 2: router 100-110, expert 110-200.
    step1 = _event(1, "ProfilerStep#1", 0, 100)
    router1 = _event(2, "router", 0, 30, step1)
    _event(3, "aten::mm", 5, 25, router1)
    expert1 = _event(4, "expert", 30, 50, step1)
    combine1 = _event(5, "combine", 50, 60, step1)
    outer = _event(6, "expert", 60, 90, step1)
    nested = _event(7, "combine", 70, 80, outer)
    step2 = _event(8, "ProfilerStep#2", 100, 200)
    router2 = _event(9, "router", 100, 110, step2)
    expert2 = _event(10, "expert", 110, 200, step2)
    events = [step1, router1, expert1, combine1, outer, nested, step2, router2, expert2]

    phases = phase_times(events, steps=2)
    # Step 1: router 30 (inclusive of aten::mm); expert 20 + (30 - 10 nested) = 40; combine 10 + 10 = 20.
    # Step 2: router 10, expert 90, combine 0.
    # Medians of two values are their means: router 20, expert 65, combine 10 (microseconds).
    assert phases["router"] == pytest.approx(20e-6)
    assert phases["expert"] == pytest.approx(65e-6)
    assert phases["combine"] == pytest.approx(10e-6)
    assert list(phases) == ["router", "expert", "combine"]


def test_phase_times_rejects_zero_steps():
    with pytest.raises(ValueError, match="steps=0"):
        phase_times([], steps=0)


def test_operators_table_drops_empty_device_column():
    import pandas as pd

    from meobench.report import operators_table

    row = {"rank": 1, "operator": "aten::mm", "calls_per_step": 1.0, "self_cpu_ms": 2.0, "cpu_total_ms": 2.0}
    cpu_only = operators_table(pd.DataFrame([{**row, "self_device_ms": 0.0}]), "top")
    with_device = operators_table(pd.DataFrame([{**row, "self_device_ms": 1.5}]), "top")
    assert "self device (ms)" not in [column.header for column in cpu_only.columns]
    assert "self device (ms)" in [column.header for column in with_device.columns]
