"""Native MoE presets (Mixtral, OLMoE): their own sparse block, and its experts moved into meobench's bank."""

import csv

import pytest
import torch
from typer.testing import CliRunner

from meobench.cases import count_cases, expand
from meobench.cli import app
from meobench.errors import ConfigError, ScenarioError
from meobench.layers import LayerConfig
from meobench.models import PRESETS, ModelSet, count_dense_parameters, get_preset, make_model_inputs, modelset
from meobench.models.context import ForwardContext, forward_context
from meobench.models.flopcount import count_model_case
from meobench.runner import relative_error
from meobench.scenario import parse_scenario

NATIVE_TINY = {"mixtral-tiny": (4, 2), "olmoe-tiny": (8, 2)}
BATCH, SEQ_LEN = 2, 12


def make_set(name, top_k=None, **kwargs):
    num_experts, own_top_k = NATIVE_TINY[name]
    template = LayerConfig(
        num_experts=num_experts, top_k=top_k or own_top_k, d_model=64, d_ff=64, token_attention_reduction=16
    )
    return ModelSet(get_preset(name), "ffn", template, **kwargs).eval()


def make_inputs(padding_fraction=0.25):
    return make_model_inputs(1000, BATCH, SEQ_LEN, padding_fraction, None, 4, 1, "cpu")


def run(model_set, variant, strategy, inputs):
    with torch.no_grad():
        return model_set.build(variant, strategy)(inputs)


@pytest.mark.parametrize("name", NATIVE_TINY)
def test_native_logits_shape(name):
    output = run(make_set(name), "native", "grouped_mm", make_inputs())
    assert output.shape == (BATCH, SEQ_LEN, 1000)


@pytest.mark.parametrize("name", NATIVE_TINY)
def test_bank_shares_native_experts(name):
    model_set = make_set(name)
    routed = model_set.routed[0]
    num_experts, _ = NATIVE_TINY[name]
    gate_up, down = routed.layers.bank.linears
    assert gate_up.weight is routed.native.experts.gate_up_proj
    assert down.weight is routed.native.experts.down_proj
    assert tuple(gate_up.weight.shape) == (num_experts, 2 * 128, 64)
    assert torch.equal(routed.layers.router.w_gate, routed.native.gate.weight.t())
    # Mixtral always renormalises the kept probabilities; OLMoE's config leaves norm_topk_prob off.
    assert routed.layers.config.normalize_top_k == (name == "mixtral-tiny")


@pytest.mark.parametrize("name", NATIVE_TINY)
@pytest.mark.parametrize("strategy", ["loop", "grouped", "dense"])
def test_moe_token_reproduces_native_block(name, strategy):
    model_set = make_set(name)
    routed = model_set.routed[0]
    x = torch.randn(BATCH, SEQ_LEN, 64)
    context = ForwardContext("moe-token", strategy, {"input": None})
    with torch.no_grad(), forward_context(context):
        expected = routed.native(x)
        output = routed(x)
    assert relative_error(output, expected) < 1e-5


@pytest.mark.parametrize("name", NATIVE_TINY)
@pytest.mark.parametrize("strategy", ["eager", "grouped_mm", "batched_mm"])
def test_model_moe_token_equals_native(name, strategy):
    model_set = make_set(name)
    inputs = make_inputs()
    native = run(model_set, "native", strategy, inputs)
    assert relative_error(run(model_set, "moe-token", "loop", inputs), native) < 1e-5


def test_meo_equals_moe_sequence_top_1():
    # Mixtral's gate over one kept expert is 1, so merging that one expert's gated block is exact.
    model_set = make_set("mixtral-tiny", top_k=1)
    inputs = make_inputs()
    moe = run(model_set, "moe-sequence", "dense", inputs)
    for strategy in ("gemm", "gather", "fused"):
        assert relative_error(run(model_set, "meo-sequence", strategy, inputs), moe) < 1e-5, strategy


def test_meo_runs_on_native_weights():
    # With top-2 MEO merges around SwiGLU, an approximation: close to MoE, not equal.
    model_set = make_set("mixtral-tiny")
    inputs = make_inputs()
    moe = run(model_set, "moe-sequence", "dense", inputs)
    for variant in ("meo-sequence", "meo-token"):
        error = relative_error(run(model_set, variant, "gemm", inputs), moe)
        assert 1e-5 < error < 0.5, variant


def test_native_parameter_count():
    # mixtral-tiny, per layer: router 4*64 = 256; experts 4 x (64*256 + 128*64) = 98,304
    # active: router 256 + 2 experts x 24,576 = 49,408
    model_set = make_set("mixtral-tiny")
    dense_total = count_dense_parameters(get_preset("mixtral-tiny"), "lm")
    counted = model_set.count_parameters("native")
    assert counted.total == dense_total
    assert counted.active == dense_total - 2 * (98_560 - 49_408)


@pytest.mark.parametrize(
    "name, expected",
    [
        # embeddings and untied head 2 x 32,000*4,096 = 262,144,000; final norm 4,096
        # per layer: q, o 2 x 4,096^2 = 33,554,432, k, v 2 x 4,096*1,024 = 8,388,608,
        #   router 8*4,096 = 32,768, experts 8 x 3 x 4,096*14,336 = 1,409,286,144, norms 8,192
        #   -> 1,451,270,144; 32 layers = 46,440,644,608
        # total 46,702,792,704, published as 46.7B
        ("mixtral-8x7b", 46_702_792_704),
        # embeddings and untied head 2 x 50,304*2,048 = 206,045,184; final norm 2,048
        # per layer: q, k, v, o 4 x 2,048^2 = 16,777,216, q and k norms 2 x 2,048,
        #   router 64*2,048 = 131,072, experts 64 x 3 x 2,048*1,024 = 402,653,184, norms 4,096
        #   -> 419,569,664; 16 layers = 6,713,114,624
        # total 6,919,161,856, published as 6.9B
        ("olmoe-1b-7b", 6_919_161_856),
    ],
)
def test_real_native_presets_match_published(name, expected):
    preset = PRESETS[name]
    count = count_dense_parameters(preset, "lm")
    assert count == expected
    assert abs(count - preset.published_params) / preset.published_params < 0.01


def test_real_preset_build_rejected_for_memory(monkeypatch):
    class Memory:
        available = 16 * 2**30

    monkeypatch.setattr(modelset.psutil, "virtual_memory", lambda: Memory())
    template = LayerConfig(num_experts=8, top_k=2, d_model=64, d_ff=64)
    # 46,702,792,704 float32 parameters = 174.0 GiB
    with pytest.raises(ConfigError, match=r"about 174\.0 GiB .* 16\.0 GiB .*models\.check_memory: false"):
        ModelSet(get_preset("mixtral-8x7b"), "ffn", template)


@pytest.mark.parametrize("name", NATIVE_TINY)
@pytest.mark.parametrize("variant, strategy", [("native", "grouped_mm"), ("native", "eager"), ("meo-sequence", "gemm")])
def test_native_flops_match_analytic(name, variant, strategy):
    model_set = make_set(name)
    report = count_model_case(model_set.build(variant, strategy), make_inputs(), "lm", 4)
    assert report.flop_counter == report.cost.matmul_flops
    assert report.check.startswith("ok")


def test_mixtral_tiny_native_flops_by_hand():
    # B*L = 24 tokens, hidden 64, 4 heads of 16, 2 key-value heads, per layer:
    # q, o 2 x 24*64*64 = 196,608; k, v 2 x 24*64*32 = 98,304; scores 2 x 2*12*12*64 = 36,864
    # router 24*64*4 = 6,144; 2 experts per token 48 x (64*256 + 128*64) = 1,179,648
    # per layer 1,517,568 MACs; 2 layers 3,035,136; head 24*64*1,000 = 1,536,000
    # total 4,571,136 MACs = 9,142,272 FLOPs
    report = count_model_case(make_set("mixtral-tiny").build("native", "grouped_mm"), make_inputs(), "lm", 4)
    assert report.flop_counter == 9_142_272


def test_linear_placement_rejected():
    template = LayerConfig(num_experts=4, top_k=2, d_model=64, d_ff=64)
    with pytest.raises(ConfigError, match="use placement ffn"):
        ModelSet(get_preset("mixtral-tiny"), "linear", template)


def test_checkpoint_with_other_experts_rejected(tmp_path):
    # A checkpoint fixes its own expert count (8 here), which the case's num_experts must match.
    modelset.build_dense_model(get_preset("olmoe-tiny"), "lm", seed=0).save_pretrained(tmp_path)
    template = LayerConfig(num_experts=4, top_k=2, d_model=64, d_ff=64)
    with pytest.raises(ConfigError, match="has 8 experts and top-k 2, but the case asks for num_experts=4"):
        ModelSet(get_preset("olmoe-tiny"), "ffn", template, pretrained=tmp_path)


def test_native_variant_rejected_on_dense_model():
    template = LayerConfig(num_experts=4, top_k=2, d_model=64, d_ff=64)
    model_set = ModelSet(get_preset("bert-tiny"), "linear", template)
    with pytest.raises(ConfigError, match="native MoE preset"):
        model_set.build("native")


SCENARIO = """\
name: native
variants: [native, moe-token, meo-sequence]
sweep:
  model: [mixtral-tiny, olmoe-tiny, bert-tiny]
  placement: [linear]
  batch_size: 2
  seq_len: 8
"""


def test_native_cases_take_preset_experts_and_ffn():
    cases = expand(parse_scenario(SCENARIO), device="cpu")
    groups = {case.group.model: case.group for case in cases}
    assert (groups["mixtral-tiny"].num_experts, groups["mixtral-tiny"].top_k) == (4, 2)
    assert (groups["olmoe-tiny"].num_experts, groups["olmoe-tiny"].top_k) == (8, 2)
    assert groups["mixtral-tiny"].expert_kind == "ffn"
    # bert-tiny keeps the sweep's defaults and placement
    assert (groups["bert-tiny"].num_experts, groups["bert-tiny"].expert_kind) == (8, "linear")
    assert cases[0].case_id == "mixtral-tiny.native.grouped_mm.ffn-n4-k2-b2-l8-float32-cpu"


def test_count_cases_matches_expand():
    # mixtral-tiny and olmoe-tiny: one ffn group each; bert-tiny: linear and ffn groups; 3 variants each
    scenario = parse_scenario(SCENARIO.replace("placement: [linear]", "placement: [linear, ffn]"))
    assert count_cases(scenario, device="cpu") == len(expand(scenario, device="cpu")) == 4 * 3


def test_sweep_top_k_applies_to_native_presets():
    cases = expand(parse_scenario(SCENARIO.replace("seq_len: 8", "seq_len: 8\n  top_k: [1, 4]")), device="cpu")
    assert sorted({case.group.top_k for case in cases if case.group.model == "mixtral-tiny"}) == [1, 4]


def test_native_variant_needs_model():
    with pytest.raises(ScenarioError, match="needs sweep.model"):
        parse_scenario("name: t\nvariants: [native]\nsweep:\n  d_model: 64\n")


@pytest.mark.slow
def test_native_run_through_cli(tmp_path):
    scenario = tmp_path / "native.yaml"
    scenario.write_text(
        "name: native\nvariants: [native, moe-token, meo-sequence]\nsweep:\n  model: [mixtral-tiny]\n"
        "  batch_size: 2\n  seq_len: 8\nmeasure: {warmup: 0, min_repeats: 1, max_repeats: 1, max_time_s: 0.1}\n"
    )
    result = CliRunner().invoke(app, ["run", str(scenario), "--out", str(tmp_path / "out"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    with (tmp_path / "out" / "results.csv").open() as handle:
        rows = {row["variant"]: row for row in csv.DictReader(handle)}
    assert {row["status"] for row in rows.values()} == {"ok"}
    # The native block against moe-token's dense oracle on the same weights: rounding only.
    assert float(rows["native"]["fidelity_rel_err"]) < 1e-5
    assert rows["native"]["gflops"] == rows["moe-token"]["gflops"]
    assert rows["native"]["flops_check"].startswith("ok")
