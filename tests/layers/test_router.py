import pytest
import torch

from meobench.layers.router import cv_squared, masked_mean
from tests.conftest import make_layers


@pytest.mark.parametrize("level, rows", [("token", 3 * 5), ("sequence", 3), ("task", 3)])
def test_router_shapes_and_gate_sums(level, rows):
    layers = make_layers(num_experts=6, top_k=3).eval()
    x = torch.randn(3, 5, 32)
    routing = layers.router(x, level, task_ids=torch.tensor([0, 1, 0]))
    assert routing.weights.shape == (rows, 3)
    assert routing.indices.shape == (rows, 3)
    torch.testing.assert_close(routing.weights.sum(-1), torch.ones(rows))
    assert int(routing.tokens_per_expert.sum()) == rows * 3
    # Each row selects distinct experts.
    assert all(len(set(row.tolist())) == 3 for row in routing.indices)


def test_router_keeps_largest_logits():
    layers = make_layers(num_experts=5, top_k=2).eval()
    u = torch.randn(7, 32)
    routing = layers.router.route(u, "token")
    logits = u @ layers.router.w_gate
    expected = logits.topk(2).indices
    assert torch.equal(routing.indices, expected)
    torch.testing.assert_close(routing.weights, torch.softmax(logits.topk(2).values, dim=-1))


def test_unnormalized_top_k_keeps_full_softmax():
    # Logits ln 4, ln 2, ln 1, ln 1: the softmax over all 4 is 4/8, 2/8, 1/8, 1/8.
    layers = make_layers(num_experts=4, top_k=2, normalize_top_k=False).eval()
    with torch.no_grad():
        layers.router.w_gate.zero_()
        layers.router.w_gate[0] = torch.log(torch.tensor([4.0, 2.0, 1.0, 1.0]))
    u = torch.zeros(1, 32)
    u[0, 0] = 1.0
    routing = layers.router.route(u, "token")
    assert routing.indices.tolist() == [[0, 1]]
    # Kept at the top 2 without renormalising: 0.5 and 0.25, summing to 0.75.
    torch.testing.assert_close(routing.weights, torch.tensor([[0.5, 0.25]]))
    # Normalised, as Mixtral does: 0.5 / 0.75 and 0.25 / 0.75.
    layers = make_layers(num_experts=4, top_k=2).eval()
    layers.router.load_state_dict(dict(layers.router.state_dict(), w_gate=torch.zeros(32, 4)))
    with torch.no_grad():
        layers.router.w_gate[0] = torch.log(torch.tensor([4.0, 2.0, 1.0, 1.0]))
    torch.testing.assert_close(layers.router.route(u, "token").weights, torch.tensor([[2 / 3, 1 / 3]]))


def test_dense_gates_scatter():
    layers = make_layers(num_experts=4, top_k=2).eval()
    routing = layers.router.route(torch.randn(3, 32), "token")
    gates = routing.dense_gates(4)
    assert gates.shape == (3, 4)
    assert ((gates > 0).sum(-1) == 2).all()
    torch.testing.assert_close(gates.sum(-1), torch.ones(3))


def test_masked_mean_ignores_padding():
    x = torch.tensor([[[1.0], [3.0], [100.0]]])  # one sequence, third token is padding
    mask = torch.tensor([[1, 1, 0]])
    torch.testing.assert_close(masked_mean(x, mask), torch.tensor([[2.0]]))  # (1 + 3) / 2


def test_cv_squared_hand_values():
    # mean 2, unbiased variance ((1-2)^2 + (3-2)^2) / 1 = 2, cv^2 = 2 / 4 = 0.5
    torch.testing.assert_close(cv_squared(torch.tensor([1.0, 3.0])), torch.tensor(0.5))
    assert float(cv_squared(torch.tensor([5.0]))) == 0.0


def test_aux_loss_only_in_training():
    layers = make_layers(num_experts=4, top_k=1)
    x = torch.randn(4, 6, 32)
    assert float(layers.eval().router(x, "token").aux_loss.detach()) == 0.0
    assert float(layers.train().router(x, "token").aux_loss.detach()) > 0.0


def test_noisy_gating_changes_training_routing():
    layers = make_layers(num_experts=8, top_k=2).train()
    with torch.no_grad():
        layers.router.w_noise.fill_(1.0)  # large noise, so two draws differ
    x = torch.randn(16, 4, 32)
    first = layers.router(x, "token").indices
    second = layers.router(x, "token").indices
    assert not torch.equal(first, second)
