import pytest
import torch

from meobench.errors import MeobenchError
from meobench.flops import count_flops
from tests.conftest import make_layers

B, L, D, F, E = 2, 16, 32, 48, 4  # batch, seq_len, d_model, d_ff, experts


def flops_of(variant, strategy=None, top_k=2):
    layers = make_layers(num_experts=E, top_k=top_k, d_model=D, d_ff=F).eval()
    module = layers.build(variant, strategy)
    x = torch.randn(B, L, D)
    with torch.no_grad():
        return count_flops(lambda: module(x, task_ids=torch.tensor([0, 1])))


def test_dense_flops():
    # one linear over B*L tokens: 2 * 32 * 32 * 48 = 98,304
    assert flops_of("dense") == 2 * (B * L) * D * F == 98_304


def test_moe_token_loop_flops():
    # router: 2 * T * D * E = 2 * 32 * 32 * 4 = 8,192
    # experts: each of T*K token-slots runs one linear: 2 * 32 * 2 * 32 * 48 = 196,608
    assert flops_of("moe-token", "loop") == 8_192 + 196_608


def test_moe_token_dense_oracle_flops():
    # the oracle runs all E experts on every token: 2 * 32 * 4 * 32 * 48 = 393,216, plus the router 8,192
    assert flops_of("moe-token", "dense") == 8_192 + 393_216


def test_meo_sequence_gemm_flops():
    # router on B mean vectors: 2 * 2 * 32 * 4 = 512
    # weight merge [B, E] @ [E, F*D]: 2 * 2 * 4 * 1536 = 24,576; bias merge [B, E] @ [E, F]: 2 * 2 * 4 * 48 = 768
    # apply one merged linear per sequence: 2 * 32 * 32 * 48 = 98,304
    assert flops_of("meo-sequence", "gemm") == 512 + 24_576 + 768 + 98_304


def test_meo_sequence_gather_flops():
    # gather merges only the K selected experts: 2 * B * K * F * D = 2 * 2 * 2 * 1536 = 12,288; bias 2 * 2 * 2 * 48 = 384
    assert flops_of("meo-sequence", "gather") == 512 + 12_288 + 384 + 98_304


@pytest.mark.parametrize("strategy", ["fused", "auto"])
def test_meo_sequence_fused_flops(strategy):
    # fused merges only the K selected experts, as gather does: 512 + 12,288 + 384 + 98,304.
    # auto picks fused here: fused reads min(E, B*K) = 4 matrices, gather 3*B*K + 2*B = 16.
    assert flops_of("meo-sequence", strategy) == 512 + 12_288 + 384 + 98_304


def test_fused_flops_with_gradient():
    # With a gradient torch ops run instead of meobench::grouped_linear: the same 111,488 FLOPs.
    layers = make_layers(num_experts=E, top_k=2, d_model=D, d_ff=F).eval()
    module = layers.build("meo-sequence", "fused")
    x = torch.randn(B, L, D)
    assert count_flops(lambda: module(x)) == 512 + 12_288 + 384 + 98_304


def test_moe_token_grouped_flops():
    # torch._grouped_mm over the T*K = 64 sorted rows: 2 * 64 * 32 * 48 = 196,608, as loop; router 8,192
    assert flops_of("moe-token", "grouped") == 8_192 + 196_608


def test_meo_token_adds_token_attention():
    # token attention (reduction 8, bottleneck 4): down 2 * 32 * 32 * 4 = 8,192, up the same
    assert flops_of("meo-token", "gemm") == 8_192 * 2 + 512 + 24_576 + 768 + 98_304


def test_counting_twice_gives_the_same_number():
    assert flops_of("meo-sequence") == flops_of("meo-sequence")


def test_inference_mode_is_rejected():
    with torch.inference_mode(), pytest.raises(MeobenchError, match="inference_mode"):
        count_flops(lambda: torch.ones(2, 2) @ torch.ones(2, 2))


def test_grouped_mm_flop_formula():
    from meobench.flops import grouped_mm_flops

    # rows split: a [10, 8], b [3, 8, 6], out [10, 6]: 2 * 60 * 8 = 960
    assert grouped_mm_flops((10, 8), (3, 8, 6), out_shape=(10, 6)) == 960
    # batched: a [3, 10, 8], b [3, 8, 6], out [3, 10, 6]: 2 * 180 * 8 = 2,880
    assert grouped_mm_flops((3, 10, 8), (3, 8, 6), out_shape=(3, 10, 6)) == 2_880
    # K split: a [10, 8], b [8, 6], out [3, 10, 6]: 2 * 10 * 6 * 8 = 960, not 3 times that
    assert grouped_mm_flops((10, 8), (8, 6), out_shape=(3, 10, 6)) == 960
