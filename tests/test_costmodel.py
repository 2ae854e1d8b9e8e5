"""The analytic cost model against counts worked out by hand."""

import pytest

from meobench.costmodel import CaseShape, layer_cost, meo_breakeven_seq_len
from meobench.layers import VARIANTS, LayerConfig
from tests.conftest import make_layers

B, L, D, F, E = 2, 16, 32, 48, 4  # batch, seq_len, d_model, d_ff, experts; T = B*L = 32 tokens
SHAPE = CaseShape(batch_size=B, seq_len=L, element_bytes=4)


def config(**overrides) -> LayerConfig:
    fields = dict(num_experts=E, top_k=2, d_model=D, d_ff=F, token_attention_reduction=8)
    fields.update(overrides)
    return LayerConfig(**fields)


def test_dense_linear():
    cost = layer_cost(config(), "dense", "none", SHAPE)
    # one linear over T tokens: 32 * 32 * 48 = 49,152 MACs; bias 32 * 48 = 1,536 elements
    assert cost.macs == 49_152
    assert cost.elementwise_flops == 1_536
    assert cost.flops == 2 * 49_152 + 1_536 == 99_840
    # weights 32*48 + 48 = 1,584 elements; activations 32 * (32 + 48) = 2,560; 4 bytes each
    assert cost.bytes_min == (1_584 + 2_560) * 4 == 16_576
    assert cost.arithmetic_intensity == pytest.approx(99_840 / 16_576)
    assert (cost.params_total, cost.params_active) == (1_584, 1_584)


def test_moe_token_loop_linear():
    cost = layer_cost(config(), "moe-token", "loop", SHAPE)
    # router T*D*E = 32 * 32 * 4 = 4,096; experts T*K*D*F = 64 * 32 * 48 = 98,304
    assert cost.macs == 4_096 + 98_304
    by_phase = cost.flops_by_phase()
    assert by_phase["router"] == {"matmul": 8_192, "elementwise": 0}
    # expert bias on 64 token-slots x 48 = 3,072; combine: gate multiply and index_add, 3,072 each
    assert by_phase["expert"] == {"matmul": 196_608, "elementwise": 3_072}
    assert by_phase["combine"] == {"matmul": 0, "elementwise": 6_144}
    # total: E experts x 1,584 + w_gate and w_noise 2 x 32 x 4 = 6,336 + 256; active: 256 + 2 x 1,584
    assert (cost.params_total, cost.params_active) == (6_592, 3_424)


def test_moe_token_dense_oracle_runs_every_expert():
    cost = layer_cost(config(), "moe-token", "dense", SHAPE)
    # router 4,096 + all E experts on all T tokens: 32 * 4 * 32 * 48 = 196,608
    assert cost.macs == 4_096 + 196_608
    # the gate multiply's first operand is the [T, 1] gate column: 4 experts x 32 tokens
    multiply = next(term for term in cost.elementwise if term.op == "aten::mul")
    assert (multiply.flops, multiply.first_operand_elements) == (4 * 32 * 48, 128)


def test_meo_sequence_gemm_linear():
    cost = layer_cost(config(), "meo-sequence", "gemm", SHAPE)
    # router on B means: 2*32*4 = 256; merge [B, E] @ [E, F*D]: 2*4*1,536 = 12,288;
    # bias merge [B, E] @ [E, F]: 2*4*48 = 384; apply: 32*32*48 = 49,152
    assert cost.macs == 256 + 12_288 + 384 + 49_152 == 62_080
    # masked mean: mul 1,024, sum 1,024, mask sum 32, clamp 2, divide 64; merged bias 32*48 = 1,536
    assert cost.elementwise_flops == 1_024 + 1_024 + 32 + 2 + 64 + 1_536
    # weight elements: w_gate 128 + all 4 experts 6,336; merged weights written and read: 2*2*1,584;
    # activations 2,560; 4 bytes each
    assert cost.bytes_min == (128 + 6_336 + 6_336 + 2_560) * 4 == 61_440


def test_meo_sequence_fused_merges_selected_only():
    cost = layer_cost(config(), "meo-sequence", "fused", SHAPE)
    # router 256; merge of the K selected experts: B*K*F*D = 2*2*1,536 = 6,144; bias 2*2*48 = 192;
    # apply 49,152
    assert cost.macs == 256 + 6_144 + 192 + 49_152 == 55_744
    # merges and products run in meobench::grouped_linear, which the torch profiler cannot count
    assert cost.aten_matmul_flops == 2 * 256
    # reads min(E, B*K) = 4 experts, writes no W_hat: (128 + 6,336 + 2,560) * 4 bytes
    assert cost.bytes_min == (128 + 6_336 + 2_560) * 4 == 36_096


def test_meo_sequence_fused_single_expert_scales_one_expert():
    cost = layer_cost(config(top_k=1), "meo-sequence", "fused", SHAPE)
    # router 2*32*4 = 256; W_hat = g W_e: B*K*F*D = 2*1*1,536 = 3,072, bias 2*1*48 = 96; apply 49,152
    assert cost.macs == 256 + 3_072 + 96 + 49_152
    # masked mean 1,024 + 1,024 + 32 + 2 + 64; merged bias added in the op, 32*48 = 1,536
    assert cost.elementwise_flops == 2_146 + 1_536
    # w_gate 128 + min(E, B) = 2 experts of 1,584 + activations 2,560; 4 bytes each
    assert cost.bytes_min == (128 + 2 * 1_584 + 2_560) * 4 == 23_424


def test_meo_sequence_fused_reads_selected_experts():
    # B=1, K=1 of E=4: one expert of 1,584 elements is read, not all four.
    cost = layer_cost(config(top_k=1), "meo-sequence", "fused", CaseShape(batch_size=1, seq_len=L, element_bytes=4))
    # w_gate 128 + 1,584 + activations 16 * (32 + 48) = 1,280; 4 bytes each
    assert cost.bytes_min == (128 + 1_584 + 1_280) * 4


def test_meo_sequence_auto_costs_its_choice():
    # B=2, K=2, E=4: fused reads min(4, 2*2) = 4 expert matrices, gather 3*2*2 + 2*2 = 16, so auto runs fused.
    auto = layer_cost(config(), "meo-sequence", "auto", SHAPE)
    fused = layer_cost(config(), "meo-sequence", "fused", SHAPE)
    assert (auto.macs, auto.bytes_min) == (fused.macs, fused.bytes_min)


def test_moe_token_grouped_matches_loop_products():
    grouped = layer_cost(config(), "moe-token", "grouped", SHAPE)
    loop = layer_cost(config(), "moe-token", "loop", SHAPE)
    assert grouped.macs == loop.macs
    # T = 32 tokens, K = 2, F = 48: each token's first slot is written, not added, so grouped
    # does T*F = 1,536 fewer additions in its combine than loop's index_add_.
    assert grouped.elementwise_flops == loop.elementwise_flops - 1_536
    assert {term.op for term in grouped.elementwise if term.phase != "router"} == {"meobench::grouped_linear"}


def test_moe_grouped_combine_with_one_expert():
    # K = 1: the op scales T*F = 32*48 = 1,536 elements by the gates and writes each token's
    # single row, so nothing is added.
    combine = [
        term
        for term in layer_cost(config(top_k=1), "moe-token", "grouped", SHAPE).elementwise
        if term.phase == "combine"
    ]
    assert [(term.op, term.flops) for term in combine] == [("meobench::grouped_linear", 1_536)]


def test_meo_token_adds_token_attention():
    cost = layer_cost(config(), "meo-token", "gemm", SHAPE)
    # bottleneck R = 32/8 = 4: W_down 32*32*4 = 4,096, W_up the same, on top of meo-sequence's 62,080
    assert cost.macs == 62_080 + 2 * 4_096
    by_phase = cost.flops_by_phase()
    # biases 32*4 + 32*32, relu 32*4, residual add 32*32
    assert by_phase["token_attention"] == {"matmul": 16_384, "elementwise": 128 + 1_024 + 128 + 1_024}
    # extras: 32*4 + 4 + 4*32 + 32 = 292 parameters
    assert cost.params_total == 6_592 + 292


def test_moe_sequence_loop_ffn():
    cost = layer_cost(config(expert_kind="ffn"), "moe-sequence", "loop", SHAPE)
    # router 2*32*4 = 256; each of 64 token-slots runs 32->48 and 48->32: 64 * 3,072 = 196,608
    assert cost.macs == 256 + 196_608
    by_phase = cost.flops_by_phase()
    # biases 64*48 + 64*32 = 5,120; gelu between the matrices 64*48 = 3,072
    assert by_phase["expert"]["elementwise"] == 5_120 + 3_072
    # combine on the d_model-wide output: 2 x 64*32
    assert by_phase["combine"]["elementwise"] == 4_096


def test_moe_token_loop_glu():
    cost = layer_cost(config(expert_kind="glu", bias=False, activation="silu"), "moe-token", "loop", SHAPE)
    # router T*D*E = 32*32*4 = 4,096; each of 64 token-slots runs 32 -> 2*48 and 48 -> 32:
    # 64 * (32*96 + 48*32) = 64 * 4,608 = 294,912
    assert cost.macs == 4_096 + 294_912
    by_phase = cost.flops_by_phase()
    # silu on the 48-wide gate and its product with up: 2 x 64*48, no biases
    assert by_phase["expert"]["elementwise"] == 2 * 3_072
    # 4 experts x 4,608 + w_gate and w_noise 2*32*4 = 18,432 + 256; active 256 + 2 x 4,608
    assert (cost.params_total, cost.params_active) == (18_688, 9_472)


def test_meo_sequence_gemm_glu():
    cost = layer_cost(config(expert_kind="glu", bias=False), "meo-sequence", "gemm", SHAPE)
    # router 2*32*4 = 256; merge [B, E] @ [E, 96*32] and [E, 32*48]: 2*4*(3,072 + 1,536) = 36,864;
    # merged expert on every token: 32 * 4,608 = 147,456
    assert cost.macs == 256 + 36_864 + 147_456


def test_meo_sequence_fused_glu_single_expert():
    cost = layer_cost(config(expert_kind="glu", bias=False, top_k=1), "meo-sequence", "fused", SHAPE)
    expert = [(term.op, term.flops) for term in cost.elementwise if term.phase == "expert"]
    # T = 32 tokens, no biases: only the activation of the 48-wide gate and its product with up
    # (32*48 = 1,536 each) run outside the op
    assert expert == [("aten::gelu", 1_536), ("aten::mul", 1_536)]
    # merges of the one selected expert: 2*1*(96*32 + 32*48) = 9,216; products 32*(3,072 + 1,536) = 147,456
    assert cost.macs == 256 + 9_216 + 147_456


def test_meo_task_gather_ffn():
    cost = layer_cost(config(expert_kind="ffn"), "meo-task", "gather", SHAPE)
    # router on B task embeddings 256; merge K=2 experts per sequence: 2*2*(1,536 + 1,536) = 12,288;
    # bias merge 2*2*(48 + 32) = 320; apply both merged matrices: 32 * 3,072 = 98,304
    assert cost.macs == 256 + 12_288 + 320 + 98_304 == 111_168
    # gather reads only the selected experts: at most min(E, tasks*K) = min(4, 2*2) = 4 here
    per_expert = 2 * 32 * 48 + 48 + 32
    assert cost.weight_bytes == (128 + 4 * per_expert) * 4


def test_gather_with_one_expert_merges_elementwise():
    cost = layer_cost(config(top_k=1), "meo-sequence", "gather", SHAPE)
    # K = 1: torch runs the merge einsum as aten::mul, B*F*D = 2*48*32 = 3,072 products, bias 2*48 = 96
    assert cost.flops_by_phase()["merge"] == {"matmul": 0, "elementwise": 3_072 + 96}
    # router 256 + apply 49,152
    assert cost.macs == 256 + 49_152


def test_no_bias_drops_bias_terms():
    cost = layer_cost(config(bias=False), "meo-sequence", "gemm", SHAPE)
    # 62,080 without the 384 bias-merge MACs
    assert cost.macs == 61_696
    assert all(term.op not in ("aten::addmm", "aten::baddbmm") for term in cost.elementwise)


def test_breakeven_sequence_length():
    # merge M*P per sequence against (K-1)*L*P saved: gemm merges E=4 experts, K=2 -> 4/1
    assert meo_breakeven_seq_len(config(), "gemm") == 4.0
    # gather merges K=4 of 8 experts: 4/3
    assert meo_breakeven_seq_len(config(num_experts=8, top_k=4), "gather") == pytest.approx(4 / 3)
    assert meo_breakeven_seq_len(config(top_k=1), "gemm") is None


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("expert_kind", ["linear", "ffn", "glu"])
def test_parameters_match_layer_tensors(variant, expert_kind):
    layers = make_layers(expert_kind=expert_kind)
    counted = layers.count_parameters(variant)
    cost = layer_cost(layers.config, variant, VARIANTS[variant].default_strategy, SHAPE)
    assert (cost.params_total, cost.params_active) == (counted.total, counted.active)


def test_costs_add_up_across_layers():
    dense = layer_cost(config(), "dense", "none", SHAPE)
    both = dense + layer_cost(config(), "meo-sequence", "gemm", SHAPE)
    # 49,152 + 62,080 MACs; 1,584 + 6,592 parameters
    assert both.macs == 111_232
    assert both.params_total == 8_176
    assert both.flops_by_phase()["expert"]["matmul"] == 2 * (49_152 + 49_152)
