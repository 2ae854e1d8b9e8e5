"""The timed unit of work of one case: a forward pass, or a training step.

A training step is forward (noisy gating on, auxiliary load-balancing loss added),
backward and an AdamW step. It records how long each of the three parts took, so
forward and backward are reported apart as well as together.
"""

from __future__ import annotations

import statistics
import time
from typing import TYPE_CHECKING, Callable

import torch
from torch import nn
from torch.profiler import record_function

from meobench.devices import synchronize

if TYPE_CHECKING:
    from meobench.runner import CaseInputs

# Forward function of a step: inputs -> (output [B, L, F], auxiliary loss, a scalar).
Forward = Callable[["CaseInputs"], tuple[torch.Tensor, torch.Tensor]]

# AdamW learning rate of the training step. Small, because only the cost of the step
# matters here; the weights are restored after each case anyway.
LEARNING_RATE = 1e-5
# torch.compile uses CUDA graphs ("reduce-overhead") on CUDA for cases with at most this
# many tokens, where kernel launch overhead is a large share of the time.
CUDA_GRAPH_MAX_TOKENS = 4096


def forward_function(module: nn.Module) -> Forward:
    """Wrap ``module`` as one function returning its output and its auxiliary loss (zero without a router)."""

    def forward(inputs: CaseInputs) -> tuple[torch.Tensor, torch.Tensor]:
        # A layer's inputs or a model's (ModelInputs) know how to call the module.
        return inputs.call_with_aux_loss(module)

    return forward


def compile_forward(forward: Forward, device: str, tokens: int) -> Forward:
    """Compile ``forward`` with torch.compile; CUDA graphs on CUDA for small cases.

    Compilation happens on the first call, which the caller times as compile time.
    NOTE: compiled code drops torch.profiler.record_function ranges, so a compiled
    case has no phase times. The CUDA graph path has not been run on a GPU yet.
    """
    use_graphs = device.startswith("cuda") and tokens <= CUDA_GRAPH_MAX_TOKENS
    return torch.compile(forward, mode="reduce-overhead" if use_graphs else "default")


class InferenceStep:
    """One forward pass under torch.no_grad (not inference_mode, which FlopCounterMode cannot see)."""

    def __init__(self, forward: Forward, inputs: CaseInputs):
        self.forward = forward
        self.inputs = inputs

    def __call__(self) -> torch.Tensor:
        with torch.no_grad():
            return self.forward(self.inputs)[0]


class TrainStep:
    """Forward, backward and an AdamW step over ``module``'s parameters, each part timed.

    The weights are shared with the other variants of a case group, so ``restore``
    puts back the values they had when the step was built.
    """

    def __init__(self, module: nn.Module, forward: Forward, inputs: CaseInputs, device: str):
        self.module = module
        self.forward = forward
        self.inputs = inputs
        self.device = device
        self.parameters = [parameter for parameter in module.parameters() if parameter.requires_grad]
        self.saved = [parameter.detach().clone() for parameter in self.parameters]
        self.optimizer = torch.optim.AdamW(self.parameters, lr=LEARNING_RATE)
        self.part_samples_s: list[tuple[float, float, float]] = []
        """(forward, backward, optimizer) seconds of every call, in call order."""

    def __call__(self) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        start = time.perf_counter()
        with record_function("forward"):
            output, aux_loss = self.forward(self.inputs)
            loss = output.float().square().mean() + aux_loss
        synchronize(self.device)
        forward_end = time.perf_counter()
        with record_function("backward"):
            loss.backward()
        synchronize(self.device)
        backward_end = time.perf_counter()
        with record_function("optimizer"):
            self.optimizer.step()
        synchronize(self.device)
        optimizer_end = time.perf_counter()
        self.part_samples_s.append((forward_end - start, backward_end - forward_end, optimizer_end - backward_end))
        return loss.detach()

    def part_medians_s(self, last: int) -> tuple[float, float, float]:
        """Median forward, backward and optimizer seconds over the ``last`` calls."""
        samples = self.part_samples_s[-last:]
        if not samples:
            raise ValueError("no training step has run yet")
        forward, backward, optimizer = (statistics.median(part) for part in zip(*samples))
        return forward, backward, optimizer

    def optimizer_state_tensors(self) -> list[torch.Tensor]:
        """Tensors the optimizer keeps between steps (AdamW's two moments per parameter)."""
        return [value for state in self.optimizer.state.values() for value in state.values() if torch.is_tensor(value)]

    def restore(self) -> None:
        """Put the weights back as they were before the first step, and drop gradients and optimizer state."""
        with torch.no_grad():
            for parameter, saved in zip(self.parameters, self.saved):
                parameter.copy_(saved)
        self.optimizer.zero_grad(set_to_none=True)
        self.optimizer.state.clear()
