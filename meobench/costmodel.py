"""Closed-form cost of one forward pass of a layer variant: FLOPs, parameters and bytes.

Every count is a function of the case's parameters only, so it needs no tensors
and can check what the FLOP counters report. Counts are split by phase (router,
merge, expert, token_attention, combine) and by op class:

- ``matmul``: matrix products, counted in multiply-adds (MACs). One MAC is 2 FLOPs.
- ``elementwise``: bias additions, activations, gate scaling, combine sums,
  residual adds and the router's masked mean, 1 FLOP per element each.

Routing ops (topk, softmax over the kept logits, scatter, gather, index,
bincount, sort) move or select data and are not counted as FLOPs.

The counts follow what the layers in meobench.layers execute, strategy by
strategy: the ``gemm`` merge multiplies the dense [B, E] gate matrix with all E
experts, ``gather`` and ``fused`` multiply only each sequence's K selected
experts, ``loop`` and ``grouped`` MoE run T*K token-slots, the ``dense`` oracle runs every
expert on every token, and merged biases come from a matrix product too.

Shape legend: B sequences, L tokens per sequence, T = B*L tokens, D d_model,
F d_ff, O d_out, E experts, K top_k, R token attention bottleneck, N routing
decisions (T at token level, B at sequence and task level).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from meobench.layers.config import LayerConfig
from meobench.layers.meo import choose_merge
from meobench.layers.variants import variant_spec

# The custom op that runs fused MEO and grouped MoE; the torch profiler cannot count its FLOPs.
GROUPED_LINEAR = "meobench::grouped_linear"
PHASES = ("router", "token_attention", "merge", "expert", "combine")
OP_CLASSES = ("matmul", "elementwise")


@dataclass(frozen=True)
class MatmulTerm:
    """One matrix product (or one batch of equal ones) executed by the layer."""

    phase: str
    what: str
    """Name of the product in reports, such as ``gate logits``, ``W1`` or ``merge W2``."""
    macs: int
    """Multiply-adds: rows x inner width x output width, summed over the batch."""
    op: str = "aten"
    """``aten`` for torch's own products, or the custom op that runs it (which the torch profiler cannot count)."""


@dataclass(frozen=True)
class ElementwiseTerm:
    """Elementwise arithmetic executed by one aten op (possibly several calls)."""

    phase: str
    op: str
    """The aten op that executes it, for example ``aten::mul`` or ``aten::addmm`` for a fused bias."""
    flops: int
    """Elements computed: 1 FLOP each."""
    first_operand_elements: int
    """Elements of the op's first tensor operand, summed over its calls. The torch profiler
    counts this for ``aten::add`` and ``aten::mul`` rather than the elements computed."""


@dataclass(frozen=True)
class CostModel:
    """Analytic cost of one forward pass. Counts are per call; bytes use ``element_bytes``."""

    matmuls: tuple[MatmulTerm, ...]
    elementwise: tuple[ElementwiseTerm, ...]
    params_total: int
    params_active: int
    """Parameters read to compute one token's output: router, the K selected experts, extras."""
    weight_bytes: int
    """Parameters that must be read at least once: only the selected experts where the strategy allows it."""
    merged_bytes: int
    """Merged weights written and read back once (MEO only)."""
    activation_bytes: int
    """Layer input read and layer output written once."""

    @property
    def macs(self) -> int:
        return sum(term.macs for term in self.matmuls)

    @property
    def matmul_flops(self) -> int:
        return 2 * self.macs

    @property
    def aten_matmul_flops(self) -> int:
        """Matrix-product FLOPs of torch's own ops, the ones the torch profiler counts."""
        return 2 * sum(term.macs for term in self.matmuls if term.op == "aten")

    @property
    def elementwise_flops(self) -> int:
        return sum(term.flops for term in self.elementwise)

    @property
    def flops(self) -> int:
        """All classes: 2 FLOPs per multiply-add plus 1 per elementwise result."""
        return self.matmul_flops + self.elementwise_flops

    @property
    def bytes_min(self) -> int:
        """Bytes that must move between memory and the processor at least once."""
        return self.weight_bytes + self.merged_bytes + self.activation_bytes

    @property
    def arithmetic_intensity(self) -> float:
        """FLOPs per byte of ``bytes_min``."""
        return self.flops / self.bytes_min if self.bytes_min else 0.0

    def __add__(self, other: CostModel) -> CostModel:
        """Sum two costs, for a model that stacks several layers (or adds attention and embeddings)."""
        return CostModel(
            matmuls=self.matmuls + other.matmuls,
            elementwise=self.elementwise + other.elementwise,
            params_total=self.params_total + other.params_total,
            params_active=self.params_active + other.params_active,
            weight_bytes=self.weight_bytes + other.weight_bytes,
            merged_bytes=self.merged_bytes + other.merged_bytes,
            activation_bytes=self.activation_bytes + other.activation_bytes,
        )

    def flops_by_phase(self) -> dict[str, dict[str, int]]:
        """FLOPs per phase and op class: the layer phases in execution order, then any other
        phase a model adds (attention, embeddings), sorted. Empty phases are left out."""
        matmul, elementwise = Counter(), Counter()
        for term in self.matmuls:
            matmul[term.phase] += 2 * term.macs
        for term in self.elementwise:
            elementwise[term.phase] += term.flops
        phases = list(PHASES) + sorted((set(matmul) | set(elementwise)) - set(PHASES))
        return {
            phase: {"matmul": matmul[phase], "elementwise": elementwise[phase]}
            for phase in phases
            if matmul[phase] or elementwise[phase]
        }

    def to_json(self) -> dict[str, object]:
        return {
            "macs": self.macs,
            "flops_matmul": self.matmul_flops,
            "flops_elementwise": self.elementwise_flops,
            "flops_by_phase": self.flops_by_phase(),
            "params_total": self.params_total,
            "params_active": self.params_active,
            "weight_bytes": self.weight_bytes,
            "merged_bytes": self.merged_bytes,
            "activation_bytes": self.activation_bytes,
        }


@dataclass(frozen=True)
class CaseShape:
    """The parameters a layer's cost depends on, beyond its LayerConfig."""

    batch_size: int
    seq_len: int
    element_bytes: int
    """Bytes per element of the case's dtype."""
    masked: bool = True
    """Whether an attention mask is passed, so the router's sequence mean is a masked one."""

    @property
    def tokens(self) -> int:
        return self.batch_size * self.seq_len


class NoCostModelError(ValueError):
    """A strategy, registered by a user or a test, that the analytic model has no terms for."""


def layer_cost(config: LayerConfig, variant: str, strategy: str, shape: CaseShape) -> CostModel:
    """Cost of one inference forward pass of ``variant`` run with ``strategy``.

    NOTE: train mode (noisy gating, the load-balancing loss, backward) is not modelled.
    """
    spec = variant_spec(variant)
    builder = _LayerCostBuilder(config, shape)
    if spec.family == "dense":
        builder.expert_chain(rows=shape.tokens, phase="expert", label="")
        builder.read_experts(1)
    elif spec.family == "moe":
        builder.router(spec.level)
        builder.moe(strategy, spec.level)
    else:
        level = spec.level
        if level == "token":
            builder.token_attention()
            level = "sequence"
        builder.router(level)
        builder.meo(strategy, level)
    return builder.build(_parameter_counts(config, spec.family, spec.level))


def merged_weight_bytes(config: LayerConfig, batch_size: int, element_bytes: int) -> int:
    """Bytes MEO's merged weights take for one call: batch x d_out x d_in elements per expert matrix.

    One merged matrix per sequence and per matrix of the expert (one for ``linear``
    experts, two for ``ffn`` and ``glu``). Merged biases (batch x d_out) and the output are left
    out, so a measured peak above this is expected. The ``gather`` merge also keeps
    the selected experts' copies (batch x top_k x d_out x d_in), so it lands near
    top_k + 1 times this.
    """
    return sum(batch_size * d_out * d_in * element_bytes for d_in, d_out in config.expert_matrices())


def merged_experts(config: LayerConfig, strategy: str) -> int:
    """Experts that the MEO ``strategy`` multiplies into each merged weight: K (gather, fused) or E (gemm)."""
    return config.num_experts if strategy == "gemm" else config.top_k


def resolve_merge(config: LayerConfig, strategy: str, batch_size: int) -> str:
    """Name the strategy that MEO ``strategy`` runs for ``batch_size`` sequences: ``auto`` picks one per call."""
    if strategy == "auto":
        return choose_merge(batch_size, config.top_k, config.num_experts)
    return strategy


def meo_breakeven_seq_len(config: LayerConfig, strategy: str) -> float | None:
    """Sequence length below which MEO costs more matmul FLOPs than MoE, or None when MEO never saves.

    Per sequence and expert matrix P = d_in * d_out, merging costs M * P multiply-adds
    (M merged experts) and saves (K - 1) * L * P against running K experts on L tokens,
    so MEO saves FLOPs once L > M / (K - 1). With K = 1 it saves nothing at any length.
    """
    if config.top_k == 1:
        return None
    return merged_experts(config, strategy) / (config.top_k - 1)


class _LayerCostBuilder:
    """Collects the terms of one layer variant, phase by phase, in execution order."""

    def __init__(self, config: LayerConfig, shape: CaseShape):
        self.config = config
        self.shape = shape
        self.matmuls: list[MatmulTerm] = []
        self.elementwise: list[ElementwiseTerm] = []
        self.weight_elements = 0
        self.merged_elements = 0

    def matmul(self, phase: str, what: str, macs: int, op: str = "aten") -> None:
        self.matmuls.append(MatmulTerm(phase, what, macs, op))

    def pointwise(self, phase: str, op: str, flops: int, first_operand_elements: int | None = None) -> None:
        operand = flops if first_operand_elements is None else first_operand_elements
        self.elementwise.append(ElementwiseTerm(phase, op, flops, operand))

    def matrices(self) -> list[tuple[int, int]]:
        """(d_in, d_out) of each matrix in one expert, in order."""
        return self.config.expert_matrices()

    def params_per_expert(self) -> int:
        bias = self.config.bias
        return sum(d_in * d_out + (d_out if bias else 0) for d_in, d_out in self.matrices())

    def read_experts(self, count: int) -> None:
        self.weight_elements += count * self.params_per_expert()

    def expert_chain(
        self, rows: int, phase: str, label: str, bias_op: str = "aten::addmm", op: str = "aten"
    ) -> None:
        """Add one expert (or one merged expert) applied to ``rows`` rows: its matrices, biases and activation.

        ``op`` runs the matrix products: ``aten``, or the custom op that also adds the biases.
        """
        for position, (d_in, d_out) in enumerate(self.matrices()):
            if position > 0:
                self.pointwise(phase, f"aten::{self.config.activation}", rows * d_in)
                if self.config.expert_kind == "glu":
                    # activation(gate) * up: one product per element of the d_ff-wide hidden layer.
                    self.pointwise(phase, "aten::mul", rows * d_in)
            self.matmul(phase, f"{label}W{position + 1}", rows * d_in * d_out, op)
            if self.config.bias:
                # F.linear, baddbmm and meobench::grouped_linear add the bias inside the matrix product op.
                self.pointwise(phase, bias_op, rows * d_out)

    def router(self, level: str) -> None:
        """Add the routing input and the gate logits. Top-k and softmax are routing ops, not counted."""
        b, tokens, d, e = self.shape.batch_size, self.shape.tokens, self.config.d_model, self.config.num_experts
        decisions = tokens if level == "token" else b
        if level == "sequence":
            if self.shape.masked:
                # masked_mean: x * mask, sum over L, mask.sum over L, clamp_min, divide by the count.
                self.pointwise("router", "aten::mul", tokens * d)
                self.pointwise("router", "aten::sum", tokens * d)
                self.pointwise("router", "aten::sum", tokens)
                self.pointwise("router", "aten::clamp_min", b)
                self.pointwise("router", "aten::div", b * d)
            else:
                self.pointwise("router", "aten::mean", tokens * d)
        self.matmul("router", "gate logits", decisions * d * e)
        self.weight_elements += d * e

    def token_attention(self) -> None:
        """Add x + W_up relu(W_down x + b_down) + b_up on every token."""
        tokens, d = self.shape.tokens, self.config.d_model
        r = d // self.config.token_attention_reduction
        self.matmul("token_attention", "W_down", tokens * d * r)
        self.pointwise("token_attention", "aten::addmm", tokens * r)
        self.pointwise("token_attention", "aten::relu", tokens * r)
        self.matmul("token_attention", "W_up", tokens * r * d)
        self.pointwise("token_attention", "aten::addmm", tokens * d)
        self.pointwise("token_attention", "aten::add", tokens * d)
        self.weight_elements += d * r + r + r * d + d

    def moe(self, strategy: str, level: str) -> None:
        tokens, k, e = self.shape.tokens, self.config.top_k, self.config.num_experts
        d_out = self.config.d_out
        decisions = tokens if level == "token" else self._sequence_decisions(level)
        if strategy == "loop":
            # Every token-slot runs its expert once, whichever experts the router picks.
            self.expert_chain(rows=tokens * k, phase="expert", label="")
            self.pointwise("combine", "aten::mul", tokens * k * d_out)
            self.pointwise("combine", "aten::index_add_", tokens * k * d_out)
            self.read_experts(min(e, decisions * k))
        elif strategy == "grouped":
            # Every matrix runs in meobench::grouped_linear (inference: no gradient is needed),
            # which also scales each token-slot by its gate and adds a token's K slots up.
            self.expert_chain(rows=tokens * k, phase="expert", label="", bias_op=GROUPED_LINEAR, op=GROUPED_LINEAR)
            self.pointwise("combine", GROUPED_LINEAR, tokens * k * d_out)
            if k > 1:
                self.pointwise("combine", GROUPED_LINEAR, tokens * (k - 1) * d_out)
            self.read_experts(min(e, decisions * k))
        elif strategy == "dense":
            self.expert_chain(rows=tokens * e, phase="expert", label="")
            # gates[:, e:e+1] * expert_out: the first operand is the [T, 1] gate column.
            self.pointwise("combine", "aten::mul", e * tokens * d_out, first_operand_elements=e * tokens)
            self.pointwise("combine", "aten::add_", e * tokens * d_out)
            self.read_experts(e)
        else:
            raise NoCostModelError(
                f"MoE strategy {strategy!r} has no cost model; add its terms to _LayerCostBuilder.moe."
            )

    def _sequence_decisions(self, level: str) -> int:
        """Distinct routing decisions at sequence or task level."""
        if level == "task":
            return min(self.shape.batch_size, self.config.num_tasks)
        return self.shape.batch_size

    def meo(self, strategy: str, level: str) -> None:
        b, tokens = self.shape.batch_size, self.shape.tokens
        strategy = resolve_merge(self.config, strategy, b)
        merged = merged_experts(self.config, strategy)
        if strategy not in ("gather", "gemm", "fused"):
            raise NoCostModelError(
                f"MEO merge strategy {strategy!r} has no cost model; add its terms to _LayerCostBuilder.meo."
            )
        for position, (d_in, d_out) in enumerate(self.matrices()):
            if strategy == "gather" and merged == 1:
                # With K = 1 the einsum sums over a size-1 index, so torch runs it as aten::mul
                # of the [B, 1] gates (the first operand) with the selected weights: no matrix product.
                self.pointwise("merge", "aten::mul", b * d_in * d_out, first_operand_elements=b)
                if self.config.bias:
                    self.pointwise("merge", "aten::mul", b * d_out, first_operand_elements=b)
                continue
            # fused merges and applies in meobench::grouped_linear (inference: no gradient is needed).
            op = GROUPED_LINEAR if strategy == "fused" else "aten"
            self.matmul("merge", f"merge W{position + 1}", b * merged * d_in * d_out, op)
            if self.config.bias:
                self.matmul("merge", f"merge b{position + 1}", b * merged * d_out, op)
        if strategy == "fused":
            self.expert_chain(rows=tokens, phase="expert", label="merged ", bias_op=GROUPED_LINEAR, op=GROUPED_LINEAR)
        else:
            self.expert_chain(rows=tokens, phase="expert", label="merged ", bias_op="aten::baddbmm")
        experts_read = self.config.num_experts
        if strategy != "gemm":
            experts_read = min(experts_read, self._sequence_decisions(level) * self.config.top_k)
        self.read_experts(experts_read)
        if strategy != "fused":
            # W_hat and b_hat are written once and read once; fused keeps its tiles in cache.
            self.merged_elements += 2 * b * self.params_per_expert()

    def build(self, params: tuple[int, int]) -> CostModel:
        element_bytes = self.shape.element_bytes
        activations = self.shape.tokens * (self.config.d_model + self.config.d_out)
        return CostModel(
            matmuls=tuple(self.matmuls),
            elementwise=tuple(self.elementwise),
            params_total=params[0],
            params_active=params[1],
            weight_bytes=self.weight_elements * element_bytes,
            merged_bytes=self.merged_elements * element_bytes,
            activation_bytes=activations * element_bytes,
        )


def _parameter_counts(config: LayerConfig, family: str, level: str | None) -> tuple[int, int]:
    """(total, active per token) parameters, counted the way LayerSet.count_parameters counts tensors."""
    d, e, k = config.d_model, config.num_experts, config.top_k
    per_expert = sum(d_in * d_out + (d_out if config.bias else 0) for d_in, d_out in config.expert_matrices())
    if family == "dense":
        return per_expert, per_expert
    router = d * e * (2 if config.noisy_gating else 1)
    if level == "task":
        router += config.num_tasks * d
    extras = 0
    if family == "meo" and level == "token" and config.token_attention_fits:
        r = d // config.token_attention_reduction
        extras = d * r + r + r * d + d
    return e * per_expert + router + extras, router + k * per_expert + extras
