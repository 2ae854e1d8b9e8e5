"""Every FLOP counter against the analytic model, and the counters' known pitfalls."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from meobench.costmodel import CaseShape
from meobench.counters import count_fvcore, count_profiler
from meobench.flopcheck import count_case, expected_profiler_flops
from meobench.flops import count_flops
from meobench.layers import VARIANTS
from meobench.shape_only import ShapeOnlyMode
from tests.conftest import make_layers

B, L, D = 3, 8, 32  # batch, seq_len, d_model; T = 24 tokens

CASES = [
    (variant, strategy, kind, bias, top_k)
    for variant, spec in VARIANTS.items()
    for strategy in spec.strategies()
    for kind in ("linear", "ffn")
    for bias in (True, False)
    for top_k in (1, 2)
] + [(variant, VARIANTS[variant].default_strategy, "glu", False, 2) for variant in VARIANTS]


def inputs():
    x = torch.randn(B, L, D)
    mask = torch.ones(B, L, dtype=torch.long)
    mask[:, -2:] = 0
    return x, mask, torch.arange(B) % 4


@pytest.mark.parametrize("variant,strategy,kind,bias,top_k", CASES)
def test_counters_match_analytic_model(variant, strategy, kind, bias, top_k):
    layers = make_layers(expert_kind=kind, bias=bias, top_k=top_k).eval()
    module = layers.build(variant, strategy)
    report = count_case(module, inputs(), layers.config, variant, strategy, CaseShape(B, L, 4))
    assert report.check == "ok"
    assert report.flop_counter == report.cost.matmul_flops
    assert report.fvcore.flops == report.cost.matmul_flops
    assert report.profiler == expected_profiler_flops(report.cost)


@pytest.mark.parametrize("variant,strategy", [("moe-token", "loop"), ("meo-sequence", "gather"), ("meo-token", "gemm")])
def test_shape_only_counts_like_real_run(variant, strategy):
    layers = make_layers().eval()
    module = layers.build(variant, strategy)
    arguments = inputs()
    with torch.no_grad():
        real = count_flops(lambda: module(*arguments))
        real_profiler = count_profiler(lambda: module(*arguments))
        with ShapeOnlyMode():
            shape_only = count_flops(lambda: module(*arguments))
        with ShapeOnlyMode():
            shape_only_profiler = count_profiler(lambda: module(*arguments))
    assert shape_only == real
    assert shape_only_profiler == real_profiler


def test_counting_twice_gives_the_same_numbers():
    layers = make_layers().eval()
    module = layers.build("moe-token", "loop")
    arguments = inputs()
    shape = CaseShape(B, L, 4)
    first = count_case(module, arguments, layers.config, "moe-token", "loop", shape)
    second = count_case(module, arguments, layers.config, "moe-token", "loop", shape)
    assert (first.flop_counter, first.fvcore.flops, first.profiler) == (
        second.flop_counter,
        second.fvcore.flops,
        second.profiler,
    )


def test_uncounted_routing_ops_are_listed():
    layers = make_layers().eval()  # 4 experts, top_k 2
    module = layers.build("moe-token", "loop")
    report = count_case(module, inputs(), layers.config, "moe-token", "loop", CaseShape(B, L, 4))
    topk = report.uncounted_ops["aten::topk"]
    # one call on T=24 tokens keeping K+1 = 3 logits: values [24, 3] and indices [24, 3]
    assert (topk.calls, topk.elements) == (1, 72)
    # index_add_ adds one d_ff-wide row per token-slot: 24 * 2 * 48 = 2,304 elements
    assert report.uncounted_ops["aten::index_add_"].elements == 2_304
    assert "uncounted_ops" in report.to_json()


def test_profiler_counts_add_but_not_subtract():
    a, b = torch.randn(8, 16), torch.randn(8, 16)
    column = torch.randn(8, 1)
    assert count_profiler(lambda: a + b) == 128
    assert count_profiler(lambda: a - b) == 0
    # only the first operand's 8 elements, though 128 products are computed
    assert count_profiler(lambda: column * a) == 8


def test_profiler_leaves_out_shape_only_internals():
    a, b = torch.randn(8, 16), torch.randn(16, 4)
    with ShapeOnlyMode():
        # 2 * 8 * 16 * 4 = 1,024, counted once although the mode computes the result on meta too
        assert count_profiler(lambda: a @ b) == 1_024


class Attention(nn.Module):
    def forward(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v)


def test_fvcore_counts_scaled_dot_product_attention():
    q = torch.randn(2, 3, 5, 8)  # batch 2, heads 3, 5 queries, width 8
    k = torch.randn(2, 3, 7, 8)  # 7 keys
    v = torch.randn(2, 3, 7, 4)  # value width 4
    # q k^T: 6 * 5 * 7 * 8 = 1,680 MACs; weights @ v: 6 * 5 * 7 * 4 = 840 MACs; 2 FLOPs each
    assert count_fvcore(Attention(), (q, k, v)).flops == 2 * (1_680 + 840)


def test_stock_fvcore_counts_zero_for_attention():
    from fvcore.nn import FlopCountAnalysis

    q = torch.randn(1, 1, 4, 8)
    analysis = FlopCountAnalysis(Attention(), (q, q, q))
    analysis.unsupported_ops_warnings(False)
    assert analysis.total() == 0
    assert "aten::scaled_dot_product_attention" in analysis.unsupported_ops()


class Merge(nn.Module):
    def forward(self, gates, stack):
        return torch.einsum("bk,bkfd->bfd", gates, stack)


def test_fvcore_einsum_counted_by_formula():
    gates, stack = torch.randn(2, 3), torch.randn(2, 3, 5, 7)
    # every index once: b*k*f*d = 2 * 3 * 5 * 7 = 210 MACs
    assert count_fvcore(Merge(), (gates, stack)).flops == 2 * 210


def test_fvcore_einsum_without_summed_index_is_elementwise():
    # with k = 1 nothing is summed, so torch runs aten::mul: no matrix product to count
    gates, stack = torch.randn(2, 1), torch.randn(2, 1, 5, 7)
    assert count_fvcore(Merge(), (gates, stack)).flops == 0


def test_fvcore_baddbmm_counted():
    class Apply(nn.Module):
        def forward(self, bias, x, weight):
            return torch.baddbmm(bias, x, weight)

    # 2 batches of [5, 7] @ [7, 3]: 2 * 5 * 7 * 3 = 210 MACs; the bias addition is not counted
    count = count_fvcore(Apply(), (torch.randn(2, 1, 3), torch.randn(2, 5, 7), torch.randn(2, 7, 3)))
    assert count.flops == 420
    assert count.unsupported_ops == {}


def test_count_flops_rejects_inference_mode():
    from meobench.errors import MeobenchError

    with torch.inference_mode(), pytest.raises(MeobenchError, match="inference_mode"):
        count_flops(lambda: torch.ones(2, 2) @ torch.ones(2, 2))


def test_user_strategy_is_counted_but_not_checked(monkeypatch):
    # A strategy registered outside meobench has no analytic terms: the case still gets its
    # FlopCounterMode count (the loop strategy's work) and a check that states why it was not checked.
    from meobench.layers import MOE_STRATEGIES
    from meobench.layers.moe import run_loop

    monkeypatch.setitem(MOE_STRATEGIES, "user-loop", run_loop)
    layers = make_layers(num_experts=4, top_k=2, d_model=D).eval()
    module = layers.build("moe-token", "user-loop")
    report = count_case(module, inputs(), layers.config, "moe-token", "user-loop", CaseShape(B, L, element_bytes=4))
    expected = count_case(
        layers.build("moe-token", "loop"),
        inputs(),
        layers.config,
        "moe-token",
        "loop",
        CaseShape(B, L, element_bytes=4),
    )
    assert report.cost is None
    assert report.check.startswith("not checked: MoE strategy 'user-loop' has no cost model")
    assert report.flop_counter == expected.flop_counter


@pytest.mark.parametrize("top_k", [1, 2])
def test_fused_counts_through_the_op(top_k):
    # fused runs meobench::grouped_linear, which FlopCounterMode and fvcore count by formula.
    layers = make_layers(top_k=top_k).eval()
    module = layers.build("meo-sequence", "fused")
    report = count_case(module, inputs(), layers.config, "meo-sequence", "fused", CaseShape(B, L, 4))
    assert report.check == "ok"
    assert report.fvcore.flops == report.cost.matmul_flops
