"""Model presets: a family, a transformers config and the size its authors published.

Every preset builds its model from a config class with random weights, so nothing
is ever downloaded. The ``tiny`` preset of each family (2 layers, hidden 64) is
meant for tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from transformers import BartConfig, BertConfig, GPT2Config, PretrainedConfig, T5Config

from meobench.errors import ConfigError


@dataclass(frozen=True)
class ModelPreset:
    """A named architecture: its family and the config fields that define it."""

    name: str
    family: str
    """``bert``, ``gpt2``, ``t5`` or ``bart``: selects the model classes and the feed-forward sites."""
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

    def config(self) -> PretrainedConfig:
        """Build a fresh config with dropout off, so that inference and training steps are deterministic."""
        return self.config_class(**self.fields, **_NO_DROPOUT[self.family])


# Dropout fields per family; benchmarks run without dropout so that outputs compare exactly.
_NO_DROPOUT = {
    "bert": {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0},
    "gpt2": {"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0},
    "t5": {"dropout_rate": 0.0},
    "bart": {"dropout": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.0},
}

# Config field of the feed-forward width per family.
_FFN_FIELD = {"bert": "intermediate_size", "gpt2": "n_inner", "t5": "d_ff", "bart": "encoder_ffn_dim"}

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
