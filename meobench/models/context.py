"""The per-forward state that routed feed-forward layers read inside a transformers model.

A transformers model passes only hidden states to its feed-forward modules, but
sequence-level routing needs the attention mask (to average real tokens only)
and task-level routing needs the task ids. ``VariantModel`` therefore sets a
``ForwardContext`` around each forward pass, and every ``RoutedFeedForward``
reads the variant to run, its mask and the task ids from it. The context lives
in a ``contextvars.ContextVar``, so concurrent forwards in other threads do not
see each other's masks.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Iterator

import torch

from meobench.errors import ConfigError

# Attention streams a routed layer can sit in: the model's input sequence
# (BERT, GPT-2 and the encoders of T5 and BART) or the decoder sequence of T5 and BART.
SIDES = ("input", "decoder")


@dataclass
class ForwardContext:
    """Variant, masks and task ids that one forward pass of a model passes to its routed layers."""

    variant: str
    """Layer variant every routed layer runs, e.g. ``meo-sequence``."""
    strategy: str
    """Execution strategy of that variant."""
    attention_masks: dict[str, torch.Tensor | None]
    """Mask [B, L] per side, 1 for real tokens and 0 for padding; None means all tokens are real."""
    task_ids: torch.Tensor | None = None
    """[B] task index per sequence, for task-level routing."""
    aux_losses: list[torch.Tensor] = field(default_factory=list)
    """Load-balancing losses the routed layers returned during this pass."""


_CURRENT: ContextVar[ForwardContext | None] = ContextVar("meobench_forward_context", default=None)


@contextmanager
def forward_context(context: ForwardContext) -> Iterator[ForwardContext]:
    """Make ``context`` the current one for the duration of the block."""
    token = _CURRENT.set(context)
    try:
        yield context
    finally:
        _CURRENT.reset(token)


def current_context() -> ForwardContext:
    """Return the context of the forward pass in progress; raise ConfigError outside one."""
    context = _CURRENT.get()
    if context is None:
        raise ConfigError(
            "a routed feed-forward layer ran outside a forward context, so it does not know its variant "
            "or attention mask; call the model through ModelSet.build(variant)(inputs)."
        )
    return context
