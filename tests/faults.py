"""MoE strategies that fail on purpose, for the tests of failure handling.

They are not registered on import: a test that needs them uses the ``faults``
fixture, which adds them to MOE_STRATEGIES for that test only, so the strategy
list that users and other tests see is unchanged. A child process started by
IsolatedRunner registers them through ``child_entry``.
"""

import os
import signal
import time

import pytest
import torch

from meobench.isolation import run_case_in_child
from meobench.layers import MOE_STRATEGIES


def raise_error(bank, x, weights, indices):
    """Raise a RuntimeError, as a bug in a strategy would."""
    raise RuntimeError("injected failure\nsecond line")


def nan_output(bank, x, weights, indices):
    """Return an output of the right shape that is all NaN."""
    return torch.full((x.shape[0], bank.config.d_out), float("nan"), dtype=x.dtype, device=x.device)


def out_of_memory(bank, x, weights, indices):
    """Raise the error torch raises when a CUDA allocation fails."""
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")


def sleep(bank, x, weights, indices):
    """Sleep far past any test's time limit; SIGALRM interrupts the sleep."""
    time.sleep(60)
    return x.new_zeros(x.shape[0], bank.config.d_out)


def hang(bank, x, weights, indices):
    """Sleep with SIGALRM blocked, like a kernel that never returns: only a kill ends it."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    time.sleep(60)
    return x.new_zeros(x.shape[0], bank.config.d_out)


def crash(bank, x, weights, indices):
    """Kill this process with SIGSEGV, as a crash in native code would. Use only in a child process."""
    os.kill(os.getpid(), signal.SIGSEGV)


FAULTS = {
    "fault-raise": raise_error,
    "fault-nan": nan_output,
    "fault-oom": out_of_memory,
    "fault-sleep": sleep,
    "fault-hang": hang,
    "fault-crash": crash,
}


@pytest.fixture
def faults(monkeypatch):
    """Register the fault strategies for one test."""
    for name, strategy in FAULTS.items():
        monkeypatch.setitem(MOE_STRATEGIES, name, strategy)


def child_entry(*args):
    """IsolatedRunner child entry that registers the fault strategies first."""
    MOE_STRATEGIES.update(FAULTS)
    run_case_in_child(*args)


def tiny_scenario(strategies, **measure):
    """Scenario text with moe-token on the given strategies and shapes that run in milliseconds.

    It runs in train mode, which counts FLOPs on the real step. Inference mode first counts
    FLOPs on shape-only tensors, so a fault would fire inside that count instead.
    """
    options = {"warmup": 0, "min_repeats": 1, "max_repeats": 2, "max_time_s": 0.05, **measure}
    measure_text = ", ".join(f"{key}: {value}" for key, value in options.items())
    return (
        "name: faults\nvariants: [moe-token]\nmode: train\n"
        f"sweep: {{num_experts: 2, top_k: 1, batch_size: 1, seq_len: 4, d_model: 8, d_ff: 8, "
        f"strategy: [{', '.join(strategies)}], device: cpu}}\n"
        f"measure: {{{measure_text}}}\n"
    )
