"""Typed configuration shared by every layer variant of one benchmark case."""

from __future__ import annotations

from dataclasses import dataclass

from meobench.errors import ConfigError

EXPERT_KINDS = ("linear", "ffn", "glu")
ROUTING_LEVELS = ("token", "sequence", "task")
ACTIVATIONS = ("relu", "gelu", "gelu_tanh", "silu")


@dataclass(frozen=True)
class LayerConfig:
    """Sizes and options of an expert bank, its router and the MEO extras.

    Validated on construction; every error names the field, its value and the fix.
    """

    # Experts
    num_experts: int
    """n: experts in the bank."""
    top_k: int
    """m (also k): experts selected per routing decision, 1 <= top_k <= num_experts."""
    d_model: int
    """Width of the layer input (and of the output for ``ffn`` experts)."""
    d_ff: int
    """Width of the ``linear`` expert's output, or of the ``ffn`` expert's hidden layer."""
    expert_kind: str = "linear"
    """``linear``: one affine map d_model -> d_ff per expert, activation outside the layer.
    ``ffn``: d_model -> d_ff -> d_model with ``activation`` inside each expert.
    ``glu``: a gated feed-forward block (SwiGLU with silu): d_model -> 2 x d_ff, whose
    first half (gate) and second half (up) give activation(gate) * up, then d_ff -> d_model."""
    bias: bool = True
    """Whether each expert matrix has a bias vector."""
    activation: str = "gelu"
    """Non-linearity inside ``ffn`` experts. The token attention block always uses
    ReLU, as the MEO reference code does."""

    # Routing
    noisy_gating: bool = True
    """Add N(0, 1) * (softplus(u @ W_noise) + 0.01) to the logits in training mode."""
    aux_loss_weight: float = 0.01
    """Weight of the cv^2(importance) + cv^2(load) load-balancing loss."""
    normalize_top_k: bool = True
    """True: gate values are a softmax over the K kept logits, so they sum to 1 (Mixtral).
    False: they are the full softmax over all E experts at the K kept ones (OLMoE's default)."""
    num_tasks: int = 4
    """Rows of the task embedding that task-level routing reads."""

    # Token-level MEO
    token_attention_reduction: int = 64
    """r: the token attention block's bottleneck is d_model / r wide."""

    def __post_init__(self) -> None:
        _require_positive("num_experts", self.num_experts)
        _require_positive("top_k", self.top_k)
        _require_positive("d_model", self.d_model)
        _require_positive("d_ff", self.d_ff)
        _require_positive("num_tasks", self.num_tasks)
        _require_positive("token_attention_reduction", self.token_attention_reduction)
        if self.top_k > self.num_experts:
            raise ConfigError(
                f"top_k={self.top_k} is larger than num_experts={self.num_experts}: "
                "a router cannot select more experts than the bank holds; "
                "use top_k <= num_experts."
            )
        if self.expert_kind not in EXPERT_KINDS:
            raise ConfigError(
                f"expert_kind={self.expert_kind!r} is not valid; choose one of {', '.join(EXPERT_KINDS)}."
            )
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"activation={self.activation!r} is not valid; choose one of {', '.join(ACTIVATIONS)}.")
        if self.aux_loss_weight < 0:
            raise ConfigError(f"aux_loss_weight={self.aux_loss_weight} is negative; use 0 or more.")

    @property
    def token_attention_fits(self) -> bool:
        """Whether d_model divides into the token attention block's bottleneck."""
        return self.d_model % self.token_attention_reduction == 0

    def require_token_attention(self) -> None:
        """Raise ConfigError unless token-level MEO can be built with this config."""
        if not self.token_attention_fits:
            raise ConfigError(
                f"d_model={self.d_model} is not divisible by token_attention_reduction="
                f"{self.token_attention_reduction}, so the token attention bottleneck would not "
                "have a whole width; pick a reduction that divides d_model."
            )

    @property
    def d_out(self) -> int:
        """Width of the layer output."""
        return self.d_ff if self.expert_kind == "linear" else self.d_model

    def expert_matrices(self) -> list[tuple[int, int]]:
        """(d_in, d_out) of each matrix of one expert, in the order they run."""
        d, f = self.d_model, self.d_ff
        if self.expert_kind == "linear":
            return [(d, f)]
        if self.expert_kind == "glu":
            # The first matrix contains the gate and up projections stacked: [2F, D].
            return [(d, 2 * f), (f, d)]
        return [(d, f), (f, d)]


def _require_positive(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{name}={value!r} is not a positive integer; use 1 or more.")
