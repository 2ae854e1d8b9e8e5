"""CUDA paths of memory and profiling; skipped on machines without a CUDA device."""

import pytest
import torch

from meobench.memory import measure_peak_memory
from meobench.profiling import ProfileSettings, profile_steps
from meobench.runner import CaseInputs
from meobench.steps import InferenceStep, forward_function
from tests.conftest import make_layers

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_cuda_peak_of_known_allocation():
    def allocate():
        block = torch.ones(1024, 1024, device="cuda")  # 4 MiB of float32
        return block.sum()

    peak = measure_peak_memory(allocate, "cuda")
    assert peak.method == "cuda_allocator"
    assert abs(peak.peak_bytes - 4 * 2**20) <= 0.1 * 4 * 2**20
    assert peak.absolute_bytes >= peak.peak_bytes


def test_cuda_phases_use_device_clock(tmp_path):
    layers = make_layers().eval().to("cuda")
    x = torch.randn(2, 8, 32, device="cuda")
    inputs = CaseInputs(x, torch.ones(2, 8, dtype=torch.long, device="cuda"), torch.arange(2, device="cuda") % 4)
    step = InferenceStep(forward_function(layers.build("moe-token")), inputs)
    summary = profile_steps(step, "cuda", ProfileSettings(warmup=1, active=2, out_dir=tmp_path), "moe-token")
    assert summary.clock == "device"
    assert {"router", "dispatch", "expert", "combine"} <= set(summary.phase_s)
    assert summary.phase_s["expert"] > 0
