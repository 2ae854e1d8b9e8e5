"""Top-k softmax router at token, sequence or task level, with noisy gating.

Shape legend: B sequences, L tokens per sequence, D d_model, E experts, K top_k,
N routing decisions (B*L at token level, B at sequence and task level).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from meobench.errors import ConfigError
from meobench.layers.config import ROUTING_LEVELS, LayerConfig

# Noise floor added to the learned noise scale, as in Shazeer et al. (2017).
NOISE_EPSILON = 0.01


@dataclass(frozen=True)
class Routing:
    """One routing decision per token (token level) or per sequence (sequence, task)."""

    level: str
    """``token``, ``sequence`` or ``task``."""
    weights: torch.Tensor
    """Gate values [N, K]: softmax over the kept logits, so each row sums to 1, or with
    ``normalize_top_k`` off the full softmax's values at the kept experts."""
    indices: torch.Tensor
    """Selected experts [N, K], int64."""
    tokens_per_expert: torch.Tensor
    """Routing decisions that selected each expert [E], int64."""
    aux_loss: torch.Tensor
    """Load-balancing loss (scalar); zero outside training."""

    def dense_gates(self, num_experts: int) -> torch.Tensor:
        """Gate matrix [N, E] with the unselected experts' entries zero."""
        gates = self.weights.new_zeros(self.weights.shape[0], num_experts)
        return gates.scatter(1, self.indices, self.weights)


class Router(nn.Module):
    """Scores E experts for a routing input u and keeps the top K.

    The routing input is the token's hidden state (``token``), the mean over a
    sequence's real tokens (``sequence``) or a learned task embedding (``task``).
    """

    def __init__(self, config: LayerConfig, generator: torch.Generator):
        super().__init__()
        self.config = config
        d, e = config.d_model, config.num_experts
        # NOTE: random-normal init, not zeros: all-zero logits make every expert tie
        # and top-k then picks by position, which routes every input identically.
        self.w_gate = nn.Parameter(torch.randn(d, e, generator=generator) / math.sqrt(d))  # [D, E]
        self.w_noise = nn.Parameter(torch.zeros(d, e))  # [D, E]
        self.task_embedding = nn.Parameter(torch.randn(config.num_tasks, d, generator=generator))  # [tasks, D]

    def routing_input(
        self,
        x: torch.Tensor,
        level: str,
        attention_mask: torch.Tensor | None = None,
        task_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Build u for x [B, L, D]: [B*L, D] at token level, [B, D] otherwise."""
        if level == "token":
            return x.reshape(-1, x.shape[-1])
        if level == "sequence":
            return masked_mean(x, attention_mask)
        if level == "task":
            if task_ids is None:
                raise ConfigError("task-level routing needs task_ids, one per sequence; pass task_ids=[B] ints.")
            return self.task_embedding[task_ids].to(x.dtype)
        raise ConfigError(f"routing level {level!r} is not valid; choose one of {', '.join(ROUTING_LEVELS)}.")

    def forward(
        self,
        x: torch.Tensor,
        level: str,
        attention_mask: torch.Tensor | None = None,
        task_ids: torch.Tensor | None = None,
    ) -> Routing:
        u = self.routing_input(x, level, attention_mask, task_ids)  # [N, D]
        return self.route(u, level)

    def route(self, u: torch.Tensor, level: str) -> Routing:
        """Select the top K experts for each row of u [N, D]."""
        k, e = self.config.top_k, self.config.num_experts
        clean_logits = u @ self.w_gate  # [N, E]
        noisy = self.training and self.config.noisy_gating
        if noisy:
            noise_std = F.softplus(u @ self.w_noise) + NOISE_EPSILON
            logits = clean_logits + torch.randn_like(clean_logits) * noise_std
        else:
            logits = clean_logits

        # Take K+1 values because the noisy load estimate needs the logit of the first expert left out.
        top_values, top_indices = logits.topk(min(k + 1, e), dim=-1)
        indices = top_indices[:, :k]
        if self.config.normalize_top_k:
            # Equal to a softmax over all E, kept at the top K, divided by their sum.
            weights = torch.softmax(top_values[:, :k].float(), dim=-1).to(u.dtype)  # [N, K]
        else:
            weights = torch.softmax(logits.float(), dim=-1).gather(1, indices).to(u.dtype)  # [N, K]
        tokens_per_expert = torch.bincount(indices.reshape(-1), minlength=e)

        aux_loss = u.new_zeros(())
        if self.training:
            gates = weights.new_zeros(weights.shape[0], e).scatter(1, indices, weights)
            importance = gates.sum(0)
            if noisy and k < e:
                load = _load_estimate(clean_logits, logits, noise_std, top_values, k).sum(0)
            else:
                load = (gates > 0).sum(0).to(u.dtype)
            aux_loss = self.config.aux_loss_weight * (cv_squared(importance) + cv_squared(load))
        return Routing(level, weights, indices, tokens_per_expert, aux_loss)


def masked_mean(x: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of x [B, L, D] over each sequence's real tokens -> [B, D].

    NOTE: the MEO reference code averages padding positions too; meobench
    averages only positions where attention_mask is non-zero.
    """
    if attention_mask is None:
        return x.mean(dim=1)
    mask = attention_mask.to(x.dtype).unsqueeze(-1)  # [B, L, 1]
    count = mask.sum(dim=1).clamp_min(1.0)  # [B, 1]; an all-padding row averages to zero
    return (x * mask).sum(dim=1) / count


def cv_squared(values: torch.Tensor) -> torch.Tensor:
    """Squared coefficient of variation; zero for a single value."""
    values = values.float()
    if values.numel() <= 1:
        return values.new_zeros(())
    return values.var() / (values.mean() ** 2 + 1e-10)


def _load_estimate(
    clean_logits: torch.Tensor,
    noisy_logits: torch.Tensor,
    noise_std: torch.Tensor,
    top_values: torch.Tensor,
    k: int,
) -> torch.Tensor:
    """Probability [N, E] that each expert stays in the top K under fresh noise.

    Differentiable load estimate of Shazeer et al. (2017): an expert already in the
    top K must beat the (K+1)-th value, any other expert the K-th value.
    """
    threshold_if_in = top_values[:, k : k + 1]  # [N, 1], the (K+1)-th value
    threshold_if_out = top_values[:, k - 1 : k]  # [N, 1], the K-th value
    is_in = noisy_logits > threshold_if_in
    normal = torch.distributions.Normal(0.0, 1.0)
    prob_if_in = normal.cdf(((clean_logits - threshold_if_in) / noise_std).float())
    prob_if_out = normal.cdf(((clean_logits - threshold_if_out) / noise_std).float())
    return torch.where(is_in, prob_if_in, prob_if_out)
