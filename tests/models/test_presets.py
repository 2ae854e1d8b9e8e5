import pytest

from meobench.errors import ConfigError
from meobench.models import PRESETS, count_dense_parameters, get_preset


def test_bert_base_params_match_published():
    # embeddings: 30522*768 + 512*768 + 2*768 + LayerNorm 2*768 = 23,837,184
    # per layer: attention 4*(768*768 + 768) = 2,362,368, two LayerNorms 2*1,536 = 3,072,
    #   intermediate 768*3072 + 3072 = 2,362,368, output 3072*768 + 768 = 2,360,064 -> 7,087,872
    # 12 layers = 85,054,464; pooler 768*768 + 768 = 590,592
    # total 23,837,184 + 85,054,464 + 590,592 = 109,482,240, published as 110M
    count = count_dense_parameters(get_preset("bert-base"), "bare")
    assert count == 109_482_240
    # Devlin et al. print 110M for 109.48M: the exact count is within 0.5% of it.
    assert abs(count - PRESETS["bert-base"].published_params) / count < 0.005


def test_gpt2_params_match_published():
    # wte 50257*768 = 38,597,376; wpe 1024*768 = 786,432
    # per layer: ln_1 1,536, c_attn 768*2304 + 2304 = 1,771,776, attn c_proj 768*768 + 768 = 590,592,
    #   ln_2 1,536, c_fc 768*3072 + 3072 = 2,362,368, mlp c_proj 3072*768 + 768 = 2,360,064 -> 7,087,872
    # 12 layers = 85,054,464; ln_f 1,536
    # total 38,597,376 + 786,432 + 85,054,464 + 1,536 = 124,439,808, published as 124M
    count = count_dense_parameters(get_preset("gpt2"), "bare")
    assert count == 124_439_808
    assert round(count / 1e6) == PRESETS["gpt2"].published_params / 1e6


def test_gpt2_lm_head_is_tied():
    # GPT2LMHeadModel's head shares the 50257 x 768 embedding, so it adds no parameters.
    assert count_dense_parameters(get_preset("gpt2"), "lm") == 124_439_808


@pytest.mark.parametrize(
    "name, widths",
    [("bert-small", (512, 2048)), ("bert-large", (1024, 4096)), ("gpt2", (768, 3072)), ("t5-v1_1-base", (768, 2048))],
)
def test_preset_widths(name, widths):
    assert get_preset(name).widths() == widths


def test_every_family_has_tiny_preset():
    tiny = {preset.family for preset in PRESETS.values() if preset.widths() == (64, 256)}
    assert tiny == {"bert", "gpt2", "t5", "bart"}


def test_unknown_preset_lists_names():
    with pytest.raises(ConfigError, match="bert-base"):
        get_preset("bert-huge")
