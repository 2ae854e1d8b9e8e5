"""Model families: their transformers classes and where their feed-forward weights sit.

Placements:
- ``linear``: each feed-forward linear becomes its own routed layer with its own
  router, and the activation stays between them, as the MEO reference code places
  its layers (BERT intermediate.dense and output.dense, GPT-2 c_fc and c_proj,
  T5 wi and wo or wi_0, wi_1 and wo, BART fc1 and fc2).
- ``ffn``: the whole feed-forward block (first linear, activation, second linear)
  is one expert of one routed layer.

Native MoE families (Mixtral, OLMoE) already have a sparse MoE block in place of the
feed-forward block. Their only placement is ``ffn``: the routed layer takes the block's
place, and its expert bank and router hold the block's own weights (see placement).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn
from transformers import (
    BartForConditionalGeneration,
    BartModel,
    BertForMaskedLM,
    BertModel,
    GPT2LMHeadModel,
    GPT2Model,
    MixtralForCausalLM,
    MixtralModel,
    OlmoeForCausalLM,
    OlmoeModel,
    PretrainedConfig,
    PreTrainedModel,
    T5ForConditionalGeneration,
    T5Model,
)
from transformers.models.bart.modeling_bart import BartDecoderLayer, BartEncoderLayer
from transformers.models.bert.modeling_bert import BertLayer
from transformers.models.gpt2.modeling_gpt2 import GPT2MLP
from transformers.models.mixtral.modeling_mixtral import MixtralDecoderLayer
from transformers.models.olmoe.modeling_olmoe import OlmoeDecoderLayer
from transformers.models.t5.modeling_t5 import T5DenseActDense, T5DenseGatedActDense, T5LayerFF

from meobench.errors import ConfigError

PLACEMENTS = ("linear", "ffn")
HEADS = ("lm", "bare")

# transformers activation names -> meobench expert activations (ffn placement only).
ACTIVATION_NAMES = {"gelu": "gelu", "relu": "relu", "gelu_new": "gelu_tanh", "silu": "silu", "swish": "silu"}


@dataclass(frozen=True)
class Site:
    """One place where a routed layer replaces dense feed-forward weights."""

    path: str
    """Qualified name of the replaced attribute, for messages."""
    parent: nn.Module
    attribute: str
    """Attribute of ``parent`` that the routed layer replaces."""
    linears: tuple[nn.Module, ...]
    """Dense linears (nn.Linear or GPT-2's Conv1D) whose weights fill the experts, in order."""
    side: str
    """``input`` or ``decoder``: which attention mask the routed layer reads."""
    activation: str = "gelu"
    """meobench activation between an ``ffn`` expert's two linears."""
    cleared: tuple[tuple[nn.Module, str], ...] = ()
    """(module, attribute) pairs that become nn.Identity because the routed layer now does their work."""
    native_block: nn.Module | None = None
    """A native MoE model's sparse MoE block (router ``gate`` and fused ``experts``); ``linears`` is then empty."""


@dataclass(frozen=True)
class Family:
    name: str
    bare_class: type[PreTrainedModel]
    """Model without a head: BertModel, GPT2Model, T5Model, BartModel."""
    lm_class: type[PreTrainedModel]
    """Model with its language-model head (BERT's masked-LM head)."""
    encoder_decoder: bool
    find_sites: Callable[[str, nn.Module, str, PretrainedConfig], list[Site]]
    """(module path, module, placement, config) -> the sites in that module; [] for other modules."""
    native_moe: bool = False
    """Whether the sites are the model's own sparse MoE blocks (placement ``ffn`` only)."""

    def model_class(self, head: str) -> type[PreTrainedModel]:
        return self.lm_class if head == "lm" else self.bare_class


def _side(path: str) -> str:
    return "decoder" if ".decoder." in f".{path}." else "input"


def _activation(name: str, path: str) -> str:
    try:
        return ACTIVATION_NAMES[name]
    except KeyError:
        raise ConfigError(
            f"{path} uses activation {name!r}, which ffn experts do not implement; use placement linear, "
            f"or a model with one of {', '.join(ACTIVATION_NAMES)}."
        ) from None


def _linear_sites(path: str, parents_and_names: list[tuple[str, nn.Module, str]]) -> list[Site]:
    sites = []
    for prefix, parent, name in parents_and_names:
        qualified = f"{path}.{prefix}{name}" if path else f"{prefix}{name}"
        sites.append(Site(qualified, parent, name, (getattr(parent, name),), _side(qualified)))
    return sites


def _bert_sites(path: str, module: nn.Module, placement: str, config: PretrainedConfig) -> list[Site]:
    if not isinstance(module, BertLayer):
        return []
    if placement == "linear":
        return _linear_sites(
            path, [("intermediate.", module.intermediate, "dense"), ("output.", module.output, "dense")]
        )
    # BertIntermediate applies the activation itself, so the routed layer replaces it whole;
    # BertOutput keeps its dropout, residual and LayerNorm around an identity dense.
    linears = (module.intermediate.dense, module.output.dense)
    activation = _activation(config.hidden_act, path)
    cleared = ((module.output, "dense"),)
    return [Site(f"{path}.intermediate", module, "intermediate", linears, _side(path), activation, cleared)]


def _gpt2_sites(path: str, module: nn.Module, placement: str, config: PretrainedConfig) -> list[Site]:
    if not isinstance(module, GPT2MLP):
        return []
    if placement == "linear":
        return _linear_sites(path, [("", module, "c_fc"), ("", module, "c_proj")])
    activation = _activation(config.activation_function, path)
    linears = (module.c_fc, module.c_proj)
    cleared = ((module, "act"), (module, "c_proj"))
    return [Site(f"{path}.c_fc", module, "c_fc", linears, _side(path), activation, cleared)]


def _t5_sites(path: str, module: nn.Module, placement: str, config: PretrainedConfig) -> list[Site]:
    if placement == "linear":
        if isinstance(module, T5DenseGatedActDense):
            return _linear_sites(path, [("", module, "wi_0"), ("", module, "wi_1"), ("", module, "wo")])
        if isinstance(module, T5DenseActDense):
            return _linear_sites(path, [("", module, "wi"), ("", module, "wo")])
        return []
    if not isinstance(module, T5LayerFF):
        return []
    block = module.DenseReluDense
    if isinstance(block, T5DenseGatedActDense):
        raise ConfigError(
            f"{path} is a gated feed-forward block (wi_0, wi_1, wo), which an ffn expert cannot hold; "
            "use placement linear for gated T5 models."
        )
    activation = _activation(config.dense_act_fn, path)
    return [Site(f"{path}.DenseReluDense", module, "DenseReluDense", (block.wi, block.wo), _side(path), activation)]


def _bart_sites(path: str, module: nn.Module, placement: str, config: PretrainedConfig) -> list[Site]:
    if not isinstance(module, (BartEncoderLayer, BartDecoderLayer)):
        return []
    if placement == "linear":
        return _linear_sites(path, [("", module, "fc1"), ("", module, "fc2")])
    # The layer calls activation_fn(fc1(x)) and then fc2 itself, so both become identities.
    activation = _activation(config.activation_function, path)
    linears = (module.fc1, module.fc2)
    cleared = ((module, "activation_fn"), (module, "fc2"))
    return [Site(f"{path}.fc1", module, "fc1", linears, _side(path), activation, cleared)]


def _native_moe_sites(path: str, module: nn.Module, placement: str, config: PretrainedConfig) -> list[Site]:
    # Mixtral and OLMoE decoder layers call self.mlp(hidden_states) on their sparse MoE block.
    if not isinstance(module, (MixtralDecoderLayer, OlmoeDecoderLayer)):
        return []
    if placement != "ffn":
        raise ConfigError(
            f"{path}.mlp is a native sparse MoE block, whose experts are whole gated feed-forward blocks; "
            "use placement ffn for native MoE models."
        )
    activation = _activation(config.hidden_act, path)
    return [Site(f"{path}.mlp", module, "mlp", (), _side(path), activation, native_block=module.mlp)]


FAMILIES: dict[str, Family] = {
    "bert": Family("bert", BertModel, BertForMaskedLM, False, _bert_sites),
    "gpt2": Family("gpt2", GPT2Model, GPT2LMHeadModel, False, _gpt2_sites),
    "t5": Family("t5", T5Model, T5ForConditionalGeneration, True, _t5_sites),
    "bart": Family("bart", BartModel, BartForConditionalGeneration, True, _bart_sites),
    "mixtral": Family("mixtral", MixtralModel, MixtralForCausalLM, False, _native_moe_sites, native_moe=True),
    "olmoe": Family("olmoe", OlmoeModel, OlmoeForCausalLM, False, _native_moe_sites, native_moe=True),
}


def find_sites(family: Family, model: nn.Module, placement: str) -> list[Site]:
    """List the feed-forward sites of ``model`` in module order."""
    if placement not in PLACEMENTS:
        raise ConfigError(f"placement {placement!r} is not valid; choose one of {', '.join(PLACEMENTS)}.")
    sites = []
    for path, module in model.named_modules():
        sites.extend(family.find_sites(path, module, placement, model.config))
    return sites
