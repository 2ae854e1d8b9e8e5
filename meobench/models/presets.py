"""Model presets: a family, a transformers config and the size its authors published.

Every preset builds its model from a config class with random weights, so nothing
is ever downloaded. The ``tiny`` preset of each family (2 layers, hidden 64) is
meant for tests. The real-size native MoE presets (mixtral-8x7b, olmoe-1b-7b) are
listed with their sizes, but building one takes far more memory than most hosts
have; meobench.models.modelset checks that before it builds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from transformers import BartConfig, BertConfig, GPT2Config, MixtralConfig, OlmoeConfig, PretrainedConfig, T5Config

from meobench.errors import ConfigError


@dataclass(frozen=True)
class ModelPreset:
    """A named architecture: its family and the config fields that define it."""

    name: str
    family: str
    """``bert``, ``gpt2``, ``t5``, ``bart``, or a native MoE family (``mixtral``, ``olmoe``): selects the
    model classes and the feed-forward sites."""
    config_class: Callable[..., PretrainedConfig]
    fields: dict[str, Any]
    """Keyword arguments of ``config_class``; fields left out take transformers' defaults."""
    published_params: int | None
    """Parameter count its authors published, rounded as they printed it; None for the tiny presets."""
    source: str = ""
    """Source of ``published_params``."""

    def widths(self) -> tuple[int, int]:
        """(hidden size, feed-forward width) of the architecture."""
        config = self.config()
        return config.hidden_size, feed_forward_width(self.family, config)

    def max_positions(self) -> int | None:
        """Maximum sequence length the position embeddings cover; None for T5's relative positions."""
        config = self.config()
        return getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)

    @property
    def native_moe(self) -> bool:
        """Whether the model has its own sparse MoE blocks (Mixtral, OLMoE) in place of dense feed-forward blocks."""
        return self.family in NATIVE_MOE_FAMILIES

    def native_experts(self) -> tuple[int, int]:
        """(experts, top-k) of a native MoE preset's own blocks."""
        config = self.config()
        return config.num_local_experts, config.num_experts_per_tok

    def config(self, num_experts: int | None = None, top_k: int | None = None) -> PretrainedConfig:
        """Build a fresh config with dropout off, so that inference and training steps are deterministic.

        ``num_experts`` and ``top_k`` replace a native MoE preset's expert count and
        experts per token; other presets have none and reject them.
        """
        fields = {**self.fields, **_NO_DROPOUT[self.family]}
        if num_experts is not None or top_k is not None:
            if not self.native_moe:
                raise ConfigError(
                    f"model preset {self.name!r} has no native MoE blocks, so its config takes no expert count "
                    "or top-k; pass num_experts and top_k only for mixtral-* and olmoe-* presets."
                )
            experts_field, top_k_field = _EXPERT_FIELDS[self.family]
            fields[experts_field] = num_experts if num_experts is not None else fields[experts_field]
            fields[top_k_field] = top_k if top_k is not None else fields[top_k_field]
        return self.config_class(**fields)


# Dropout fields per family; benchmarks run without dropout so that outputs compare exactly.
_NO_DROPOUT = {
    "bert": {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0},
    "gpt2": {"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0},
    "t5": {"dropout_rate": 0.0},
    "bart": {"dropout": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.0},
    "mixtral": {"attention_dropout": 0.0, "router_jitter_noise": 0.0},
    "olmoe": {"attention_dropout": 0.0},
}

# Config field of the feed-forward width per family; for native MoE families, the width of one expert.
_FFN_FIELD = {
    "bert": "intermediate_size",
    "gpt2": "n_inner",
    "t5": "d_ff",
    "bart": "encoder_ffn_dim",
    "mixtral": "intermediate_size",
    "olmoe": "intermediate_size",
}

NATIVE_MOE_FAMILIES = ("mixtral", "olmoe")
# Config fields of (expert count, experts per token) of each native MoE family.
_EXPERT_FIELDS = {
    "mixtral": ("num_local_experts", "num_experts_per_tok"),
    "olmoe": ("num_experts", "num_experts_per_tok"),
}

_TINY_VOCAB = 1000


def _bert(layers: int, hidden: int, heads: int, ffn: int, **extra: Any) -> dict[str, Any]:
    return dict(num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=heads, intermediate_size=ffn, **extra)


def _gpt2(layers: int, hidden: int, heads: int, **extra: Any) -> dict[str, Any]:
    return dict(n_layer=layers, n_embd=hidden, n_head=heads, **extra)


def _t5(layers: int, hidden: int, heads: int, ffn: int, feed_forward: str, **extra: Any) -> dict[str, Any]:
    fields = dict(
        num_layers=layers,
        num_decoder_layers=layers,
        d_model=hidden,
        d_kv=hidden // heads,
        num_heads=heads,
        d_ff=ffn,
        feed_forward_proj=feed_forward,
    )
    return {**fields, **extra}


def _bart(layers: int, hidden: int, heads: int, ffn: int, **extra: Any) -> dict[str, Any]:
    return dict(
        encoder_layers=layers,
        decoder_layers=layers,
        d_model=hidden,
        encoder_attention_heads=heads,
        decoder_attention_heads=heads,
        encoder_ffn_dim=ffn,
        decoder_ffn_dim=ffn,
        **extra,
    )


def _native_moe(
    family: str, layers: int, hidden: int, heads: int, kv_heads: int, ffn: int, experts: int, top_k: int, **extra: Any
) -> dict[str, Any]:
    """Fields of MixtralConfig or OlmoeConfig; ``ffn`` is the width of one expert."""
    experts_field, top_k_field = _EXPERT_FIELDS[family]
    fields = dict(
        num_hidden_layers=layers,
        hidden_size=hidden,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        intermediate_size=ffn,
        **{experts_field: experts, top_k_field: top_k},
    )
    return {**fields, **extra}


_PRESET_LIST = [
    ModelPreset("bert-tiny", "bert", BertConfig, _bert(2, 64, 2, 256, vocab_size=_TINY_VOCAB), None),
    ModelPreset("bert-small", "bert", BertConfig, _bert(4, 512, 8, 2048), 29_000_000, "Turc et al. 2019, BERT-Small"),
    ModelPreset("bert-base", "bert", BertConfig, _bert(12, 768, 12, 3072), 110_000_000, "Devlin et al. 2019"),
    ModelPreset("bert-large", "bert", BertConfig, _bert(24, 1024, 16, 4096), 340_000_000, "Devlin et al. 2019"),
    ModelPreset(
        "gpt2-tiny", "gpt2", GPT2Config, _gpt2(2, 64, 2, vocab_size=_TINY_VOCAB, bos_token_id=0, eos_token_id=0), None
    ),
    ModelPreset("gpt2", "gpt2", GPT2Config, _gpt2(12, 768, 12), 124_000_000, "OpenAI GPT-2 release (124M)"),
    ModelPreset("gpt2-medium", "gpt2", GPT2Config, _gpt2(24, 1024, 16), 355_000_000, "OpenAI GPT-2 release (355M)"),
    ModelPreset("t5-tiny", "t5", T5Config, _t5(2, 64, 2, 256, "relu", vocab_size=_TINY_VOCAB), None),
    ModelPreset(
        "t5-tiny-gated",
        "t5",
        T5Config,
        _t5(2, 64, 2, 256, "gated-gelu", vocab_size=_TINY_VOCAB, tie_word_embeddings=False),
        None,
    ),
    ModelPreset("t5-small", "t5", T5Config, _t5(6, 512, 8, 2048, "relu"), 60_000_000, "Raffel et al. 2020"),
    ModelPreset("t5-base", "t5", T5Config, _t5(12, 768, 12, 3072, "relu"), 220_000_000, "Raffel et al. 2020"),
    # NOTE: T5Config in transformers 5.25 always ties the LM head to the embeddings and reads
    # tie_word_embeddings=False only as "do not rescale the decoder output", as T5 v1.1 does. The
    # v1.1 models built here therefore lack the untied head's vocab x d_model parameters (16.4M
    # small, 24.7M base) that the published sizes include.
    ModelPreset(
        "t5-v1_1-small",
        "t5",
        T5Config,
        _t5(8, 512, 6, 1024, "gated-gelu", d_kv=64, tie_word_embeddings=False),
        77_000_000,
        "google/t5-v1_1-small model card, with its untied LM head",
    ),
    ModelPreset(
        "t5-v1_1-base",
        "t5",
        T5Config,
        _t5(12, 768, 12, 2048, "gated-gelu", tie_word_embeddings=False),
        248_000_000,
        "google/t5-v1_1-base model card, with its untied LM head",
    ),
    ModelPreset("bart-tiny", "bart", BartConfig, _bart(2, 64, 2, 256, vocab_size=_TINY_VOCAB), None),
    ModelPreset("bart-base", "bart", BartConfig, _bart(6, 768, 12, 3072), 140_000_000, "Lewis et al. 2020"),
    ModelPreset("bart-large", "bart", BartConfig, _bart(12, 1024, 16, 4096), 400_000_000, "Lewis et al. 2020"),
    ModelPreset(
        "mixtral-tiny",
        "mixtral",
        MixtralConfig,
        _native_moe("mixtral", 2, 64, 4, 2, 128, 4, 2, vocab_size=_TINY_VOCAB),
        None,
    ),
    ModelPreset(
        "mixtral-8x7b",
        "mixtral",
        MixtralConfig,
        _native_moe("mixtral", 32, 4096, 32, 8, 14336, 8, 2, vocab_size=32000),
        46_700_000_000,
        "Mistral AI's Mixtral 8x7B release: 46.7B total, 12.9B active (Jiang et al. 2024 round to 47B and 13B)",
    ),
    ModelPreset(
        "olmoe-tiny",
        "olmoe",
        OlmoeConfig,
        _native_moe("olmoe", 2, 64, 4, 4, 128, 8, 2, vocab_size=_TINY_VOCAB, eos_token_id=0),
        None,
    ),
    ModelPreset(
        "olmoe-1b-7b",
        "olmoe",
        OlmoeConfig,
        _native_moe("olmoe", 16, 2048, 16, 16, 1024, 64, 8, vocab_size=50304),
        6_900_000_000,
        "allenai/OLMoE-1B-7B model card, first version: 6.9B total, 1.2B active",
    ),
]

PRESETS: dict[str, ModelPreset] = {preset.name: preset for preset in _PRESET_LIST}


def feed_forward_width(family: str, config: PretrainedConfig) -> int:
    """Width of the feed-forward hidden layer; GPT-2's n_inner None means 4 x hidden."""
    return getattr(config, _FFN_FIELD[family]) or 4 * config.hidden_size


def get_preset(name: str) -> ModelPreset:
    """Look up a preset by name, with an error that lists the valid names."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"model preset {name!r} is not known; choose one of {', '.join(PRESETS)}.") from None
