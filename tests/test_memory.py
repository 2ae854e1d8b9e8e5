import torch

from meobench.memory import measure_peak_memory


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
