import pytest
import torch

from meobench.errors import ConfigError
from meobench.layers import MOE_STRATEGIES, MoELayer, register_strategy
from tests.conftest import make_layers

SHAPES = [
    # (num_experts, top_k, batch, seq_len, expert_kind)
    (4, 1, 2, 5, "linear"),
    (4, 2, 3, 7, "linear"),
    (8, 8, 1, 4, "linear"),
    (6, 3, 2, 5, "ffn"),
]


@pytest.mark.parametrize("num_experts, top_k, batch, seq_len, kind", SHAPES)
@pytest.mark.parametrize("level", ["token", "sequence", "task"])
@pytest.mark.parametrize("strategy", sorted(MOE_STRATEGIES))
def test_strategy_matches_dense_oracle(num_experts, top_k, batch, seq_len, kind, level, strategy):
    layers = make_layers(num_experts=num_experts, top_k=top_k, expert_kind=kind).eval()
    x = torch.randn(batch, seq_len, 32)
    task_ids = torch.arange(batch) % 4
    with torch.no_grad():
        y = layers.build(f"moe-{level}", strategy)(x, task_ids=task_ids)
        reference = layers.build(f"moe-{level}", "dense")(x, task_ids=task_ids)
    assert y.shape == (batch, seq_len, layers.config.d_out)
    torch.testing.assert_close(y, reference, rtol=1e-5, atol=1e-6)


def test_moe_token_matches_hand_sum():
    layers = make_layers(num_experts=4, top_k=2).eval()
    x = torch.randn(1, 3, 32)
    with torch.no_grad():
        y = layers.build("moe-token", "loop")(x)
        routing = layers.router(x, "token")
        for t in range(3):
            expected = sum(
                routing.weights[t, j] * layers.bank.forward_expert(int(routing.indices[t, j]), x[0, t])
                for j in range(2)
            )
            torch.testing.assert_close(y[0, t], expected)


def test_one_expert_equals_dense_layer():
    # k = n = 1: the gate is softmax over one logit = 1, so MoE is exactly expert 0.
    layers = make_layers(num_experts=1, top_k=1, expert_kind="ffn").eval()
    x = torch.randn(2, 4, 32)
    with torch.no_grad():
        torch.testing.assert_close(layers.build("moe-token", "loop")(x), layers.build("dense")(x))


def test_unknown_strategy_lists_choices():
    layers = make_layers()
    with pytest.raises(ConfigError, match="choose one of dense, loop"):
        MoELayer(layers.bank, layers.router, "token", "grouped")


def test_registry_rejects_duplicate_name():
    with pytest.raises(ValueError, match="already registered"):
        register_strategy("loop")(lambda *args: None)
