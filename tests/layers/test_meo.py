import pytest
import torch

from meobench.layers import MERGE_STRATEGIES
from meobench.layers import meo
from meobench.layers.meo import choose_merge, merge_traffic
from meobench.runner import relative_error
from tests.conftest import make_layers


@pytest.mark.parametrize("merge", sorted(MERGE_STRATEGIES))
@pytest.mark.parametrize("level", ["sequence", "task"])
@pytest.mark.parametrize("num_experts, top_k", [(4, 1), (4, 2), (8, 4), (5, 5)])
def test_meo_equals_moe_for_linear_experts(merge, level, num_experts, top_k):
    layers = make_layers(num_experts=num_experts, top_k=top_k).eval()
    x = torch.randn(3, 9, 32)
    mask = torch.ones(3, 9, dtype=torch.long)
    mask[0, 6:] = 0
    task_ids = torch.tensor([0, 2, 1])
    with torch.no_grad():
        y = layers.build(f"meo-{level}", merge)(x, mask, task_ids)
        reference = layers.build(f"moe-{level}", "dense")(x, mask, task_ids)
    assert y.shape == (3, 9, 48)
    assert relative_error(y, reference) < 1e-5


@pytest.mark.parametrize("merge", sorted(MERGE_STRATEGIES))
@pytest.mark.parametrize(
    "num_experts, top_k, batch, seq_len, d_ff, kind",
    [
        (6, 3, 2, 5, 48, "ffn"),
        (5, 2, 3, 1, 40, "ffn"),  # one token per sequence
        (7, 7, 1, 3, 40, "linear"),  # every expert selected
        (3, 1, 4, 6, 33, "linear"),  # odd d_out
        (4, 2, 2, 5, 24, "glu"),  # gate and up merged as one [2F, D] matrix
    ],
)
def test_merge_strategies_agree_with_gather(merge, num_experts, top_k, batch, seq_len, d_ff, kind):
    # For ffn experts MEO differs from MoE, so the reference is the reference code's gather merge.
    layers = make_layers(num_experts=num_experts, top_k=top_k, d_ff=d_ff, expert_kind=kind).eval()
    x = torch.randn(batch, seq_len, 32)
    with torch.no_grad():
        y = layers.build("meo-sequence", merge)(x)
        reference = layers.build("meo-sequence", "gather")(x)
    assert y.shape == (batch, seq_len, layers.config.d_out)
    torch.testing.assert_close(y, reference, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["linear", "ffn", "glu"])
def test_fused_at_ragged_widths(kind):
    # d_ff = 40 is not a multiple of the kernel's 12- or 6-row tiles, and 7 tokens per sequence
    # fill neither a 16- nor an 8-column panel.
    layers = make_layers(num_experts=5, top_k=2, d_ff=40, expert_kind=kind).eval()
    x = torch.randn(3, 7, 32)
    with torch.no_grad():
        fused = layers.build("meo-sequence", "fused")(x)
        gemm = layers.build("meo-sequence", "gemm")(x)
    torch.testing.assert_close(fused, gemm, rtol=1e-5, atol=1e-6)


def test_merge_traffic_counts():
    # B=8, K=4, E=16: gather 3*8*4 + 2*8 = 112, gemm 16 + 2*8 = 32, fused min(16, 8*4) = 16 matrices.
    assert merge_traffic("gather", 8, 4, 16) == 112
    assert merge_traffic("gemm", 8, 4, 16) == 32
    assert merge_traffic("fused", 8, 4, 16) == 16
    # B=1, K=1, E=16: fused reads the one selected expert, min(16, 1) = 1.
    assert merge_traffic("fused", 1, 1, 16) == 1


@pytest.mark.parametrize(
    "batch, top_k, num_experts",
    [
        (8, 4, 16),  # fused 16 < gemm 32 < gather 112
        (1, 1, 16),  # fused 1 < gather 3 + 2 = 5 < gemm 16 + 2 = 18
        (2, 1, 64),  # fused 2 < gather 6 + 4 = 10 < gemm 64 + 4 = 68
    ],
)
def test_auto_chooses_fused(batch, top_k, num_experts):
    assert choose_merge(batch, top_k, num_experts) == "fused"


def test_profiler_phases_of_fused():
    layers = make_layers(num_experts=4, top_k=2).eval()
    module = layers.build("meo-sequence", "fused")
    with torch.no_grad(), torch.profiler.profile() as profile:
        module(torch.randn(2, 5, 32))
    names = {event.key for event in profile.key_averages()}
    # fused merges inside meobench::grouped_linear, so its merge has no range of its own.
    assert {"router", "expert", "meobench::grouped_linear"} <= names
    assert "merge" not in names


def test_merged_weight_is_gate_weighted_sum():
    layers = make_layers(num_experts=4, top_k=2).eval()
    x = torch.randn(1, 3, 32)
    routing = layers.router(x, "sequence")
    from meobench.layers.meo import merge_gemm

    merged_weight, merged_bias = merge_gemm(layers.bank.linears[0], routing)
    (i, j), (g_i, g_j) = routing.indices[0].tolist(), routing.weights[0]
    weight = layers.bank.linears[0].weight
    torch.testing.assert_close(merged_weight[0], g_i * weight[i] + g_j * weight[j])
    bias = layers.bank.linears[0].bias
    torch.testing.assert_close(merged_bias[0], g_i * bias[i] + g_j * bias[j])


def test_ffn_meo_is_an_approximation():
    # Merging W1 and W2 separately around a non-linearity differs from MoE when k > 1.
    layers = make_layers(num_experts=4, top_k=2, expert_kind="ffn").eval()
    x = torch.randn(2, 5, 32)
    with torch.no_grad():
        y = layers.build("meo-sequence")(x)
        reference = layers.build("moe-sequence", "dense")(x)
    assert relative_error(y, reference) > 1e-3


def test_token_meo_with_zero_up_equals_sequence_meo():
    layers = make_layers(num_experts=4, top_k=2).eval()
    assert torch.count_nonzero(layers.token_attention.up.weight) == 0  # reference init
    x = torch.randn(2, 6, 32)
    with torch.no_grad():
        token = layers.build("meo-token")(x)
        sequence = layers.build("meo-sequence")(x)
    torch.testing.assert_close(token, sequence)


def test_token_meo_with_nonzero_up_differs():
    layers = make_layers(num_experts=4, top_k=2).eval()
    with torch.no_grad():
        layers.token_attention.up.weight.normal_()
    x = torch.randn(2, 6, 32)
    with torch.no_grad():
        token = layers.build("meo-token")(x)
        sequence = layers.build("meo-sequence")(x)
    assert relative_error(token, sequence) > 1e-3


def test_token_attention_bottleneck_width():
    layers = make_layers(d_model=32, token_attention_reduction=8)
    assert layers.token_attention.down.weight.shape == (4, 32)  # 32 / 8 = 4
    assert layers.token_attention.up.weight.shape == (32, 4)


@pytest.mark.parametrize("variant", ["moe-token", "moe-sequence", "meo-sequence", "meo-token", "meo-task"])
def test_gradients_reach_every_trained_part(variant):
    layers = make_layers(num_experts=4, top_k=2).train()
    with torch.no_grad():
        layers.token_attention.up.weight.normal_(std=0.1)  # non-zero, so W_down gets a gradient too
    module = layers.build(variant)
    x = torch.randn(2, 5, 32)
    y, routing = module.route_and_forward(x, task_ids=torch.tensor([0, 1]))
    (y.square().mean() + routing.aux_loss).backward()
    assert layers.bank.linears[0].weight.grad is not None
    assert layers.bank.linears[0].weight.grad.abs().sum() > 0
    gate_grad = layers.router.w_gate.grad if variant != "meo-task" else layers.router.task_embedding.grad
    assert gate_grad is not None and gate_grad.abs().sum() > 0
    if variant == "meo-token":
        assert layers.token_attention.down.weight.grad.abs().sum() > 0
        assert layers.token_attention.up.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("merge", sorted(MERGE_STRATEGIES))
@pytest.mark.parametrize("kind", ["ffn", "glu"])
def test_meo_top_1_equals_moe_for_block_experts(merge, kind):
    # With K = 1 the gate is softmax over one kept logit = 1, so the merged expert is the
    # selected expert itself, and MEO equals MoE even around the non-linearity.
    layers = make_layers(num_experts=4, top_k=1, expert_kind=kind).eval()
    x = torch.randn(3, 5, 32)
    with torch.no_grad():
        y = layers.build("meo-sequence", merge)(x)
        reference = layers.build("moe-sequence", "dense")(x)
    assert relative_error(y, reference) < 1e-5
