import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from meobench.models import FAMILIES, get_preset
from meobench.models.costs import Architecture, feed_forward_sites, shared_macs


def analytic_dense_macs(name, head, batch, seq_len, decoder_len):
    arch = Architecture.from_preset(get_preset(name))
    sites = feed_forward_sites(arch, "linear", seq_len, decoder_len)
    feed_forward = sum(batch * site.tokens * site.d_in * site.d_out * site.count for site in sites)
    return feed_forward + sum(shared_macs(arch, head, batch, seq_len, decoder_len).values())


def test_bert_base_mlm_macs_by_hand():
    # per token, 12 layers x (4*768*768 attention + 2*768*3072 feed-forward) = 84,934,656
    # masked-LM head per token 768*768 + 768*30522 = 24,030,720
    # 256 tokens: (84,934,656 + 24,030,720) * 256 = 27,895,136,256
    # scores QK^T and AV: 12 layers x 2 x 256*256*768 = 1,207,959,552
    assert analytic_dense_macs("bert-base", "lm", 1, 256, 0) == 29_103_095_808


@pytest.mark.parametrize("name", ["bert-tiny", "gpt2-tiny", "t5-tiny", "t5-tiny-gated"])
@pytest.mark.parametrize("head", ["lm", "bare"])
def test_analytic_matches_flop_counter(name, head):
    # On the meta device SDPA falls back to matrix products that FlopCounterMode counts,
    # and nothing is computed, so the count is exact and instant.
    preset = get_preset(name)
    family = FAMILIES[preset.family]
    batch, seq_len = 2, 32
    decoder_len = 16 if family.encoder_decoder else 0
    with torch.device("meta"):
        model = family.model_class(head)(preset.config()).eval()
        kwargs = {"input_ids": torch.zeros(batch, seq_len, dtype=torch.long)}
        if decoder_len:
            kwargs["decoder_input_ids"] = torch.zeros(batch, decoder_len, dtype=torch.long)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(**kwargs)
    assert counter.get_total_flops() == 2 * analytic_dense_macs(name, head, batch, seq_len, decoder_len)
