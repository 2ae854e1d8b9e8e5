import pytest

from meobench.errors import ConfigError
from meobench.layers import VARIANTS, reference_variant
from tests.conftest import make_layers


def test_variant_names():
    assert list(VARIANTS) == ["dense", "moe-token", "moe-sequence", "moe-task", "meo-sequence", "meo-token", "meo-task"]


@pytest.mark.parametrize(
    "variant, reference",
    [("dense", "moe-token"), ("moe-task", "moe-task"), ("meo-sequence", "moe-sequence"), ("meo-token", "moe-token")],
)
def test_reference_variant(variant, reference):
    assert reference_variant(variant) == reference


def test_parameter_counts_hand_worked():
    # linear experts 32 -> 48 with bias: 32*48 + 48 = 1584 per expert, 4 experts = 6336.
    # router: w_gate 32*4 = 128 and w_noise 32*4 = 128 (noisy gating on).
    # token attention (reduction 8): down 32*4 + 4 = 132, up 4*32 + 32 = 160.
    layers = make_layers(num_experts=4, top_k=2)
    assert layers.count_parameters("dense").total == 1584
    moe = layers.count_parameters("moe-token")
    assert (moe.total, moe.active) == (6336 + 256, 256 + 2 * 1584)
    meo_token = layers.count_parameters("meo-token")
    assert (meo_token.total, meo_token.active) == (6336 + 256 + 292, 256 + 2 * 1584 + 292)
    # task routing adds the task embedding: 4 tasks * 32.
    assert layers.count_parameters("moe-task").total == 6336 + 256 + 128


def test_strategy_must_fit_variant():
    layers = make_layers()
    with pytest.raises(ConfigError, match="does not apply to variant 'meo-sequence'"):
        layers.build("meo-sequence", "loop")


def test_token_meo_needs_divisible_d_model():
    layers = make_layers(d_model=30, token_attention_reduction=8)
    layers.build("moe-token")  # MoE does not need the block
    with pytest.raises(ConfigError, match="d_model=30 is not divisible by token_attention_reduction=8"):
        layers.build("meo-token")
