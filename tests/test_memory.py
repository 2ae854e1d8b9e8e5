import torch

from meobench.costmodel import merged_weight_bytes
from meobench.layers.config import LayerConfig
from meobench.memory import measure_peak_memory, replay_allocations, tensor_bytes
from meobench.steps import InferenceStep, forward_function
from tests.conftest import make_layers
from tests.test_profiling import make_inputs


def test_cpu_peak_of_known_allocation():
    def allocate():
        block = torch.ones(1024, 1024)  # 4 MiB of float32
        return float(block.sum())

    peak = measure_peak_memory(allocate, "cpu")
    assert peak.method == "profiler_events"
    assert abs(peak.peak_bytes - 4 * 2**20) <= 0.1 * 4 * 2**20


def test_cpu_peak_counts_overlap_not_sum():
    def two_sequential():
        a = torch.ones(256, 1024)  # 1 MiB
        del a
        b = torch.ones(512, 1024)  # 2 MiB, allocated after a is freed
        return b

    peak = measure_peak_memory(two_sequential, "cpu")
    assert abs(peak.peak_bytes - 2 * 2**20) <= 0.1 * 2 * 2**20


def test_absolute_peak_adds_resident_bytes():
    def allocate():
        return torch.ones(256, 1024)  # 1 MiB

    peak = measure_peak_memory(allocate, "cpu", resident_bytes=3 * 2**20)
    assert abs(peak.absolute_bytes - 4 * 2**20) <= 0.1 * 4 * 2**20
    assert peak.negative_bytes == 0
    assert peak.warnings == ()


def test_replay_allocations_hand_computed():
    # Out of order on purpose: sorted by time, the running total is 100, 40, 240, 0.
    events = [(3, 200), (1, 100), (4, -240), (2, -60)]
    assert replay_allocations(events) == (240, 0)


def test_replay_flags_negative_running_total():
    # A free with no allocation first: running totals -300, -200, -250.
    events = [(1, -300), (2, 100), (3, -50)]
    assert replay_allocations(events) == (0, -300)


def test_older_tensor_freed_inside_call():
    held = [torch.ones(1024, 1024)]  # 4 MiB allocated before the measured call

    def release():
        held.clear()

    peak = measure_peak_memory(release, "cpu")
    # torch 2.13 drops the free of a block allocated before profiling started.
    assert peak.peak_bytes == 0
    assert peak.negative_bytes == 0


def test_tensor_bytes_counts_shared_storage_once():
    a = torch.ones(10)  # 40 bytes of float32
    view = a[2:]
    b = torch.ones(5, dtype=torch.float64)  # 40 bytes
    assert tensor_bytes([a, view, b]) == 80


def test_merged_weight_bytes_hand_computed():
    linear = LayerConfig(num_experts=4, top_k=2, d_model=768, d_ff=3072)
    # 8 sequences x 3072 x 768 float32 elements = 18,874,368 x 4 bytes = 72 MiB.
    assert merged_weight_bytes(linear, batch_size=8, element_bytes=4) == 72 * 2**20
    ffn = LayerConfig(num_experts=4, top_k=2, d_model=64, d_ff=128, expert_kind="ffn")
    # Two matrices, 128 x 64 and 64 x 128: 2 x (2 x 8192) elements x 2 bytes = 65,536 bytes.
    assert merged_weight_bytes(ffn, batch_size=2, element_bytes=2) == 65536


def test_meo_peak_near_merged_weight_model():
    layers = make_layers(d_model=64, d_ff=128, token_attention_reduction=16).eval()
    inputs = make_inputs(batch=2, seq_len=16, d_model=64)
    step = InferenceStep(forward_function(layers.build("meo-sequence", "gemm")), inputs)
    expected = merged_weight_bytes(layers.config, batch_size=2, element_bytes=4)  # 2 x 128 x 64 x 4 = 64 KiB
    peak = measure_peak_memory(step, "cpu")
    # The merged weight, plus the output (2 x 16 x 128 x 4 = 16 KiB) and small routing tensors.
    assert expected <= peak.peak_bytes <= 1.5 * expected
