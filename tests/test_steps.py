import pytest
import torch

from meobench.steps import TrainStep, forward_function
from tests.conftest import make_layers
from tests.test_profiling import make_inputs


def train_step(variant: str, **overrides) -> tuple[TrainStep, object]:
    layers = make_layers(**overrides).train()
    step = TrainStep(layers.build(variant), forward_function(layers.build(variant)), make_inputs(), "cpu")
    return step, layers


def nonzero_grad(parameter: torch.Tensor) -> bool:
    return parameter.grad is not None and bool(parameter.grad.abs().sum() > 0)


@pytest.mark.parametrize("variant", ["moe-token", "meo-sequence", "meo-token"])
def test_train_step_reaches_experts_and_router(variant):
    step, layers = train_step(variant)
    step()
    assert nonzero_grad(layers.bank.linears[0].weight)
    assert nonzero_grad(layers.bank.linears[0].bias)
    assert nonzero_grad(layers.router.w_gate)
    # Noisy gating is on by default, so the noise projection learns too.
    assert nonzero_grad(layers.router.w_noise)


def test_train_step_reaches_token_attention():
    step, layers = train_step("meo-token")
    step()
    # W_up starts at zero, so only W_up and b_up get a non-zero gradient on the first step.
    assert nonzero_grad(layers.token_attention.up.weight)
    assert nonzero_grad(layers.token_attention.up.bias)
    assert layers.token_attention.down.weight.grad is not None


def test_train_step_updates_then_restores_weights():
    step, layers = train_step("meo-sequence")
    before = layers.bank.linears[0].weight.detach().clone()
    step()
    assert not torch.equal(layers.bank.linears[0].weight, before)
    step.restore()
    assert torch.equal(layers.bank.linears[0].weight, before)
    assert layers.bank.linears[0].weight.grad is None
    assert step.optimizer.state == {}


def test_train_step_records_three_parts():
    step, _ = train_step("moe-token")
    step()
    step()
    assert len(step.part_samples_s) == 2
    assert all(part > 0 for sample in step.part_samples_s for part in sample)


def test_part_medians_hand_computed():
    step, _ = train_step("dense")
    step.part_samples_s = [(9.0, 9.0, 9.0), (1.0, 2.0, 3.0), (3.0, 4.0, 5.0), (2.0, 3.0, 4.0)]
    # The last three samples: medians of (1, 3, 2), (2, 4, 3) and (3, 5, 4).
    assert step.part_medians_s(3) == (2.0, 3.0, 4.0)
    # The last two: means of the middle pair, (3 + 2) / 2 = 2.5 and so on.
    assert step.part_medians_s(2) == (2.5, 3.5, 4.5)


def test_part_medians_before_any_step():
    step, _ = train_step("dense")
    with pytest.raises(ValueError, match="no training step"):
        step.part_medians_s(1)


def test_adamw_keeps_two_moments_per_parameter():
    step, layers = train_step("dense")
    step()
    with_grad = [p for p in layers.parameters() if p.grad is not None]
    # AdamW state: exp_avg and exp_avg_sq per parameter that got a gradient (the step count is a tensor too
    # but scalar-sized; count only full-size moments).
    moments = [t for t in step.optimizer_state_tensors() if t.dim() > 0]
    assert len(moments) == 2 * len(with_grad)
