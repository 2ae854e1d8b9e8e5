import pytest
import torch

from meobench.errors import ConfigError
from meobench.layers import MOE_STRATEGIES, MoELayer, register_strategy
from meobench.layers.grouped_kernel import grouped_mm_unsupported_reason
from meobench.layers.moe import dispatch
from tests.conftest import make_layers

SHAPES = [
    # (num_experts, top_k, batch, seq_len, expert_kind)
    (4, 1, 2, 5, "linear"),
    (4, 2, 3, 7, "linear"),
    (8, 8, 1, 4, "linear"),
    (6, 3, 2, 5, "ffn"),
    (5, 2, 3, 7, "ffn"),
    (4, 2, 2, 6, "glu"),
    (7, 1, 1, 1, "linear"),  # one token: most experts get an empty segment
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
    with pytest.raises(ConfigError, match="choose one of dense, grouped, loop"):
        MoELayer(layers.bank, layers.router, "token", "scatter")


def test_registry_rejects_duplicate_name():
    with pytest.raises(ValueError, match="already registered"):
        register_strategy("loop")(lambda *args: None)


def test_dispatch_sorts_pairs_by_expert():
    # Tokens 0, 1, 2 pick experts (2, 0), (0, 1), (2, 1); sorted by expert, stably:
    # expert 0 <- token 0 slot 1, token 1 slot 0; expert 1 <- token 1, token 2; expert 2 <- token 0, token 2.
    indices = torch.tensor([[2, 0], [0, 1], [2, 1]])
    weights = torch.tensor([[0.6, 0.4], [0.7, 0.3], [0.9, 0.1]])
    pairs = dispatch(weights, indices, num_experts=4)
    assert pairs.token_of_slot.tolist() == [0, 1, 1, 2, 0, 2]
    assert pairs.expert_of_slot.tolist() == [0, 0, 1, 1, 2, 2]
    torch.testing.assert_close(pairs.gate_of_slot.flatten(), torch.tensor([0.4, 0.7, 0.3, 0.1, 0.6, 0.9]))
    assert pairs.counts == [2, 2, 2, 0]
    assert list(pairs.segments()) == [(0, 0, 2), (1, 2, 4), (2, 4, 6)]  # expert 3 has no segment


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", ["linear", "ffn"])
def test_grouped_matches_loop_in_dtype(dtype, kind):
    # float64 takes the per-segment path, float32 torch._grouped_mm where the build has it.
    layers = make_layers(num_experts=6, top_k=3, expert_kind=kind).to(dtype).eval()
    x = torch.randn(2, 9, 32, dtype=dtype)
    with torch.no_grad():
        grouped = layers.build("moe-token", "grouped")(x)
        loop = layers.build("moe-token", "loop")(x)
    torch.testing.assert_close(grouped, loop)


def test_grouped_mm_reasons_on_cpu():
    weight = torch.zeros(2, 4, 8)
    if not hasattr(torch, "_grouped_mm"):
        pytest.skip("this torch build has no torch._grouped_mm")
    assert grouped_mm_unsupported_reason(torch.zeros(5, 8), weight) is None
    assert "float64" in grouped_mm_unsupported_reason(torch.zeros(5, 8, dtype=torch.float64), weight.double())
    # Rows of 3 float32 values are 12 bytes, not a multiple of 16.
    assert "16 bytes" in grouped_mm_unsupported_reason(torch.zeros(5, 3), torch.zeros(2, 4, 3))
    with torch.enable_grad():
        assert "backward" in grouped_mm_unsupported_reason(torch.zeros(5, 8, requires_grad=True), weight)


def test_grouped_trains_through_fallback():
    layers = make_layers(num_experts=4, top_k=2, expert_kind="ffn").train()
    y, routing = layers.build("moe-token", "grouped").route_and_forward(torch.randn(2, 5, 32))
    (y.square().mean() + routing.aux_loss).backward()
    for linear in layers.bank.linears:
        assert linear.weight.grad.abs().sum() > 0
