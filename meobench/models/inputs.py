"""Seeded model inputs: token ids, attention masks with padding, decoder ids and task ids."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


def padding_mask(batch_size: int, seq_len: int, padding_fraction: float) -> torch.Tensor:
    """Attention mask [B, L] of ones whose last ``padding_fraction`` of each row is zero.

    At least one token of each sequence stays real.
    """
    mask = torch.ones(batch_size, seq_len, dtype=torch.long)
    padded = min(int(seq_len * padding_fraction), seq_len - 1)
    if padded:
        mask[:, seq_len - padded :] = 0
    return mask


@dataclass
class ModelInputs:
    """One seeded batch for a transformers model, shared by all variants of a case group."""

    input_ids: torch.Tensor
    """[B, L] token ids."""
    attention_mask: torch.Tensor
    """[B, L], 1 for real tokens and 0 for padding."""
    decoder_input_ids: torch.Tensor | None
    """[B, L_dec] decoder token ids of encoder-decoder models; None otherwise."""
    task_ids: torch.Tensor
    """[B] task index of each sequence."""

    def model_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the transformers model's forward."""
        kwargs: dict[str, Any] = {"input_ids": self.input_ids, "attention_mask": self.attention_mask}
        if self.decoder_input_ids is not None:
            kwargs["decoder_input_ids"] = self.decoder_input_ids
        return kwargs

    def call(self, module: nn.Module) -> torch.Tensor:
        """Run a ``VariantModel`` on these inputs."""
        return module(self)

    def call_with_aux_loss(self, module: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """Run a ``VariantModel`` and also return the sum of its routers' load-balancing losses."""
        return module.forward_with_aux_loss(self)

    def tensors(self) -> list[torch.Tensor]:
        tensors = [self.input_ids, self.attention_mask, self.task_ids]
        return tensors if self.decoder_input_ids is None else [*tensors, self.decoder_input_ids]


def make_model_inputs(
    vocab_size: int,
    batch_size: int,
    seq_len: int,
    padding_fraction: float,
    decoder_seq_len: int | None,
    num_tasks: int,
    seed: int,
    device: str,
) -> ModelInputs:
    """Uniform random token ids drawn from a generator seeded with ``seed``.

    ``decoder_seq_len`` None means the model has no decoder; the decoder sequence has no padding.
    """
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, vocab_size, (batch_size, seq_len), generator=generator)
    decoder_input_ids = None
    if decoder_seq_len is not None:
        decoder_input_ids = torch.randint(0, vocab_size, (batch_size, decoder_seq_len), generator=generator)
        decoder_input_ids = decoder_input_ids.to(device)
    return ModelInputs(
        input_ids=input_ids.to(device),
        attention_mask=padding_mask(batch_size, seq_len, padding_fraction).to(device),
        decoder_input_ids=decoder_input_ids,
        task_ids=(torch.arange(batch_size) % num_tasks).to(device),
    )
