"""Analytic multiply-add counts of a transformer model, split into the routed sites and the rest.

Counts are multiply-adds (MACs) of matrix products only, the convention of
FlopCounterMode divided by 2: embedding lookups, position biases, norms,
activations, softmax and residual additions cost nothing here. Padding tokens
are counted like real ones, because the model computes them too.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PretrainedConfig

from meobench.models.presets import NATIVE_MOE_FAMILIES, ModelPreset, feed_forward_width


@dataclass(frozen=True)
class Architecture:
    """The sizes of a preset that its multiply-add count depends on."""

    family: str
    hidden: int
    ffn: int
    layers: int
    """Encoder layers, or GPT-2's blocks."""
    decoder_layers: int
    """0 unless the model has a decoder (T5, BART)."""
    attention_width: int
    """heads x head width; T5 sets it apart from hidden through d_kv."""
    vocab: int
    gated: bool
    """T5 gated-GELU: two input linears (wi_0, wi_1) per feed-forward block."""
    bias: bool
    """Whether the feed-forward linears have biases (all but T5, Mixtral and OLMoE)."""
    kv_width: int = 0
    """Key and value heads x head width, below attention_width under grouped-query
    attention (Mixtral); 0 means attention_width."""
    native_moe: bool = False
    """Mixtral, OLMoE: each layer's feed-forward block is a sparse MoE block of gated
    experts, ``ffn`` wide each."""

    @classmethod
    def from_preset(cls, preset: ModelPreset) -> Architecture:
        return cls.from_config(preset.family, preset.config())

    @classmethod
    def from_config(cls, family: str, config: PretrainedConfig) -> Architecture:
        """Read the sizes of a model of ``family`` from ``config`` (a preset's or a checkpoint's)."""
        hidden, ffn = config.hidden_size, feed_forward_width(family, config)
        decoder_layers = 0
        width = hidden
        gated = False
        if family == "t5":
            decoder_layers = config.num_decoder_layers
            width = config.num_heads * config.d_kv
            gated = config.is_gated_act
        elif family == "bart":
            decoder_layers = config.decoder_layers
        native_moe = family in NATIVE_MOE_FAMILIES
        kv_width = 0
        if native_moe:
            head_width = getattr(config, "head_dim", None) or hidden // config.num_attention_heads
            width = config.num_attention_heads * head_width
            kv_width = config.num_key_value_heads * head_width
        return cls(
            family=family,
            hidden=hidden,
            ffn=ffn,
            layers=config.num_hidden_layers,
            decoder_layers=decoder_layers,
            attention_width=width,
            vocab=config.vocab_size,
            gated=gated,
            bias=family not in ("t5", *NATIVE_MOE_FAMILIES),
            kv_width=kv_width,
            native_moe=native_moe,
        )


@dataclass(frozen=True)
class FeedForwardSite:
    """One routed layer's matrices, and how many of its copies run on which tokens."""

    d_in: int
    d_out: int
    """Output width of the first (or only) matrix; an ffn site maps d_in -> d_out -> d_in."""
    expert_kind: str
    """``linear`` (one matrix), ``ffn`` (two matrices with the activation between) or ``glu``
    (a native MoE block's gated expert: d_in -> 2 x d_out, then d_out -> d_in)."""
    tokens: int
    """Tokens per sequence that pass through it: seq_len, or the decoder length."""
    count: int
    """Layers that hold one such site."""


def feed_forward_sites(arch: Architecture, placement: str, seq_len: int, decoder_len: int) -> list[FeedForwardSite]:
    """List the routed sites of ``arch`` under ``placement``, grouped by shape and stream."""
    streams = [(seq_len, arch.layers)]
    if arch.decoder_layers:
        streams.append((decoder_len, arch.decoder_layers))
    sites = []
    for tokens, layers in streams:
        if arch.native_moe:
            sites.append(FeedForwardSite(arch.hidden, arch.ffn, "glu", tokens, layers))
            continue
        if placement == "ffn":
            sites.append(FeedForwardSite(arch.hidden, arch.ffn, "ffn", tokens, layers))
            continue
        inputs = 2 if arch.gated else 1
        sites.append(FeedForwardSite(arch.hidden, arch.ffn, "linear", tokens, inputs * layers))
        sites.append(FeedForwardSite(arch.ffn, arch.hidden, "linear", tokens, layers))
    return sites


def attention_macs(batch: int, len_q: int, len_kv: int, hidden: int, width: int, kv_width: int = 0) -> dict[str, int]:
    """Count one attention block: Q, K, V, O projections, and the scores QK^T and weighted sum AV.

    ``kv_width`` is the K and V projections' width under grouped-query attention (0: ``width``).
    The scores run at the full query width, whether the key and value heads are repeated or broadcast.
    """
    kv_width = kv_width or width
    projections = batch * (len_q * hidden * width + 2 * len_kv * hidden * kv_width + len_q * width * hidden)
    scores = batch * 2 * len_q * len_kv * width
    return {"attention projections": projections, "attention scores": scores}


def head_macs(arch: Architecture, head: str, batch: int, out_len: int) -> int:
    """Count the head on ``out_len`` output tokens per sequence.

    BERT's masked-LM head: a hidden x hidden transform, then the vocabulary projection,
    on every position. BertModel without a head still runs its pooler on the first
    token. GPT-2, T5 and BART heads: the vocabulary projection only.
    """
    if head == "bare":
        return batch * arch.hidden * arch.hidden if arch.family == "bert" else 0
    transform = arch.hidden * arch.hidden if arch.family == "bert" else 0
    return batch * out_len * (transform + arch.hidden * arch.vocab)


def shared_macs(arch: Architecture, head: str, batch: int, seq_len: int, decoder_len: int) -> dict[str, int]:
    """Multiply-adds outside the routed sites, by part: attention and the head."""
    parts = {"attention projections": 0, "attention scores": 0}
    blocks = [(seq_len, seq_len, arch.layers)]
    if arch.decoder_layers:
        blocks.append((decoder_len, decoder_len, arch.decoder_layers))  # self-attention
        blocks.append((decoder_len, seq_len, arch.decoder_layers))  # cross-attention
    for len_q, len_kv, layers in blocks:
        macs_by_part = attention_macs(batch, len_q, len_kv, arch.hidden, arch.attention_width, arch.kv_width)
        for part, macs in macs_by_part.items():
            parts[part] += layers * macs
    out_len = decoder_len if arch.decoder_layers else seq_len
    parts["head"] = head_macs(arch, head, batch, out_len)
    return parts
