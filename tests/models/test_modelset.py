import pytest
import torch

from meobench.errors import ConfigError
from meobench.layers import LayerConfig
from meobench.models import FAMILIES, ModelSet, build_dense_model, get_preset, make_model_inputs
from meobench.runner import relative_error

TINY = ["bert-tiny", "gpt2-tiny", "t5-tiny", "t5-tiny-gated", "bart-tiny"]
BATCH, SEQ_LEN, DECODER_LEN = 2, 12, 6


def make_set(name, placement="linear", num_experts=4, top_k=2, **kwargs):
    template = LayerConfig(num_experts=num_experts, top_k=top_k, d_model=64, d_ff=64, token_attention_reduction=16)
    return ModelSet(get_preset(name), placement, template, **{"expert_noise": 0.1, **kwargs}).eval()


def make_inputs(name, padding_fraction=0.25, seed=1):
    preset = get_preset(name)
    decoder = DECODER_LEN if FAMILIES[preset.family].encoder_decoder else None
    return make_model_inputs(preset.config().vocab_size, BATCH, SEQ_LEN, padding_fraction, decoder, 4, seed, "cpu")


def run(model_set, variant, strategy, inputs):
    with torch.no_grad():
        return model_set.build(variant, strategy)(inputs)


@pytest.mark.parametrize("name", TINY)
def test_logits_shape(name):
    model_set = make_set(name)
    output = run(model_set, "meo-sequence", "gemm", make_inputs(name))
    length = DECODER_LEN if FAMILIES[model_set.preset.family].encoder_decoder else SEQ_LEN
    assert output.shape == (BATCH, length, 1000)


@pytest.mark.parametrize("name", ["bert-tiny", "t5-tiny"])
def test_bare_model_returns_hidden_states(name):
    output = run(make_set(name, head="bare"), "dense", None, make_inputs(name))
    assert output.shape[0] == BATCH
    assert output.shape[2] == 64


@pytest.mark.parametrize("name", TINY)
def test_meo_equals_moe_sequence_level(name):
    # Linear experts and one gate vector per sequence: merging weights is exact up to rounding.
    model_set = make_set(name)
    inputs = make_inputs(name)
    moe = run(model_set, "moe-sequence", "dense", inputs)
    for strategy in ("gemm", "gather"):
        meo = run(model_set, "meo-sequence", strategy, inputs)
        assert relative_error(meo, moe) < 1e-5, strategy


@pytest.mark.parametrize("name", TINY)
def test_moe_single_expert_equals_dense(name):
    model_set = make_set(name, num_experts=1, top_k=1)
    dense = build_dense_model(get_preset(name), "lm", seed=0)
    inputs = make_inputs(name)
    with torch.no_grad():
        expected = dense(**inputs.model_kwargs()).logits
    for variant in ("moe-token", "moe-sequence"):
        assert relative_error(run(model_set, variant, "loop", inputs), expected) < 1e-6, variant


@pytest.mark.parametrize("name, placement", [("bert-tiny", "ffn"), ("gpt2-tiny", "ffn"), ("bart-tiny", "ffn")])
def test_dense_variant_equals_original_ffn(name, placement):
    model_set = make_set(name, placement)
    dense = build_dense_model(get_preset(name), "lm", seed=0)
    inputs = make_inputs(name)
    with torch.no_grad():
        expected = dense(**inputs.model_kwargs()).logits
    # gpt2's gelu_new and torch's tanh GELU differ only in rounding.
    assert relative_error(run(model_set, "dense", None, inputs), expected) < 1e-6


def test_experts_differ_by_noise():
    model_set = make_set("gpt2-tiny", expert_noise=0.1)
    stacked = model_set.routed[0].layers.bank.linears[0].weight  # [E, 256, 64]
    dense = build_dense_model(get_preset("gpt2-tiny"), "lm", seed=0)
    c_fc = dense.transformer.h[0].mlp.c_fc.weight  # Conv1D stores [in 64, out 256]
    assert torch.equal(stacked[0], c_fc.t())
    assert not torch.equal(stacked[1], c_fc.t())


def test_sequence_routing_ignores_padding_tokens():
    # BERT attention masks the padding, and the router averages real tokens only, so
    # changing the ids at padded positions leaves the real positions' logits unchanged.
    model_set = make_set("bert-tiny", expert_noise=0.5)
    inputs = make_inputs("bert-tiny", padding_fraction=0.5)
    other = make_inputs("bert-tiny", padding_fraction=0.5)
    other.input_ids = inputs.input_ids.clone()
    other.input_ids[:, SEQ_LEN // 2 :] = (inputs.input_ids[:, SEQ_LEN // 2 :] + 1) % 1000
    real = slice(0, SEQ_LEN // 2)
    first = run(model_set, "meo-sequence", "gemm", inputs)[:, real]
    second = run(model_set, "meo-sequence", "gemm", other)[:, real]
    torch.testing.assert_close(first, second)


def test_parameter_counts_add_experts():
    # bert-tiny linear placement, 2 layers x 2 sites; n = 4, k = 2, noisy gating on.
    # intermediate: bank 4*(64*256 + 256) = 66,560, router w_gate + w_noise 2*64*4 = 512
    # output: bank 4*(256*64 + 64) = 65,792, router 2*256*4 = 2,048
    # per layer 66,560 + 512 + 65,792 + 2,048 = 134,912; two layers 269,824
    # dense feed-forward weights per layer (16,640 + 16,448) * 2 layers = 66,176 leave the model
    model_set = make_set("bert-tiny")
    dense_total = model_set.count_parameters("dense").total
    moe = model_set.count_parameters("moe-sequence")
    assert moe.total == dense_total - 66_176 + 269_824
    # active: routers 2*(512 + 2,048) = 5,120, plus 2 of 4 experts: half the banks 2*(66,560 + 65,792)/2
    assert moe.active == dense_total - 66_176 + 5_120 + 132_352


def test_gated_t5_rejects_ffn_placement():
    with pytest.raises(ConfigError, match="placement linear"):
        make_set("t5-tiny-gated", "ffn")


def test_routed_layer_needs_context():
    model_set = make_set("bert-tiny")
    with pytest.raises(ConfigError, match="forward context"):
        model_set.routed[0](torch.zeros(1, 4, 64))


def test_pretrained_directory_loads(tmp_path):
    dense = build_dense_model(get_preset("bert-tiny"), "lm", seed=7)
    dense.save_pretrained(tmp_path)
    model_set = make_set("bert-tiny", pretrained=tmp_path)
    inputs = make_inputs("bert-tiny")
    with torch.no_grad():
        expected = dense(**inputs.model_kwargs()).logits
    assert relative_error(run(model_set, "dense", None, inputs), expected) < 1e-6


def test_pretrained_missing_directory(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        make_set("bert-tiny", pretrained=tmp_path / "absent")
