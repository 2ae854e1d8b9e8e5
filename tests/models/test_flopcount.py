import pytest

from meobench.layers import LayerConfig
from meobench.models import ModelSet, get_preset, make_model_inputs
from meobench.models.flopcount import count_model_case


@pytest.mark.parametrize("variant, strategy", [("moe-token", "loop"), ("meo-sequence", "gather"), ("dense", "none")])
def test_model_count_matches_analytic(variant, strategy):
    # bart-tiny on the CPU: encoder, decoder and cross-attention run in the CPU
    # flash-attention kernel, so an exact match shows their scores are counted.
    template = LayerConfig(num_experts=4, top_k=2, d_model=64, d_ff=64, token_attention_reduction=16)
    model_set = ModelSet(get_preset("bart-tiny"), "linear", template).eval()
    inputs = make_model_inputs(1000, 2, 16, 0.25, 8, 4, 1, "cpu")
    report = count_model_case(model_set.build(variant, strategy), inputs, "lm", 4)
    scores = sum(term.macs for term in report.cost.matmuls if term.what == "attention scores")
    # encoder 2 layers x 2 x 16*16*64 x B 2 = 131,072; decoder self 2 x 2 x 8*8*64 x 2 = 32,768;
    # cross 2 x 2 x 8*16*64 x 2 = 65,536
    assert scores == 131_072 + 32_768 + 65_536
    assert report.flop_counter == report.cost.matmul_flops
    assert report.check.startswith("ok")
