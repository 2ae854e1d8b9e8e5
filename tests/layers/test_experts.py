import math

import pytest
import torch
import torch.nn.functional as F

from meobench.errors import ConfigError
from meobench.layers import ExpertBank, LayerConfig


def bank(**overrides) -> ExpertBank:
    fields = dict(num_experts=3, top_k=1, d_model=8, d_ff=12)
    fields.update(overrides)
    return ExpertBank(LayerConfig(**fields), torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    "kind, shapes",
    [
        ("linear", [((3, 12, 8), (3, 12))]),
        ("ffn", [((3, 12, 8), (3, 12)), ((3, 8, 12), (3, 8))]),
        # glu: gate and up stacked as 2 x 12 rows, then down 12 -> 8
        ("glu", [((3, 24, 8), (3, 24)), ((3, 8, 12), (3, 8))]),
    ],
)
def test_bank_stacked_shapes(kind, shapes):
    experts = bank(expert_kind=kind)
    assert [(tuple(l.weight.shape), tuple(l.bias.shape)) for l in experts.linears] == shapes


def test_bank_init_bounds_like_linear():
    experts = bank(d_model=16)
    bound = 1 / math.sqrt(16)  # nn.Linear's bound for fan_in 16
    weight = experts.linears[0].weight
    assert weight.abs().max() <= bound
    assert weight.abs().max() > 0.8 * bound  # drawn from the whole range, not left at zero
    assert torch.isfinite(weight).all()


def test_bank_same_seed_same_weights():
    assert torch.equal(bank().linears[0].weight, bank().linears[0].weight)


def test_bank_params_per_expert():
    # ffn: 8*12 + 12 + 12*8 + 8 = 212 parameters per expert
    assert bank(expert_kind="ffn").params_per_expert() == 212


def test_ffn_expert_matches_dense_ffn():
    experts = bank(expert_kind="ffn", activation="relu")
    x = torch.randn(5, 8)
    first, second = experts.linears
    expected = F.linear(F.relu(F.linear(x, first.weight[1], first.bias[1])), second.weight[1], second.bias[1])
    torch.testing.assert_close(experts.forward_expert(1, x), expected)


def test_no_bias_bank():
    experts = bank(bias=False)
    assert experts.linears[0].bias is None
    x = torch.randn(4, 8)
    torch.testing.assert_close(experts.forward_expert(2, x), x @ experts.linears[0].weight[2].T)


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(top_k=4, num_experts=3), "top_k=4 is larger than num_experts=3"),
        (dict(num_experts=0), "num_experts=0 is not a positive integer"),
        (dict(expert_kind="conv"), "expert_kind='conv' is not valid"),
        (dict(activation="tanh"), "activation='tanh' is not valid"),
    ],
)
def test_config_rejects_invalid(fields, message):
    base = dict(num_experts=3, top_k=1, d_model=8, d_ff=12)
    base.update(fields)
    with pytest.raises(ConfigError, match=message):
        LayerConfig(**base)


def test_glu_expert_matches_swiglu():
    experts = bank(expert_kind="glu", activation="silu", bias=False)
    x = torch.randn(5, 8)
    gate_up, down = experts.linears
    gate, up = gate_up.weight[2][:12], gate_up.weight[2][12:]  # [12, 8] each
    expected = F.linear(F.silu(F.linear(x, gate)) * F.linear(x, up), down.weight[2])
    torch.testing.assert_close(experts.forward_expert(2, x), expected)


def test_glu_params_per_expert():
    # glu, no bias: gate and up 8*24 = 192, down 12*8 = 96
    assert bank(expert_kind="glu", bias=False).params_per_expert() == 288
