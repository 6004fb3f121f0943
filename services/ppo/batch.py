"""Padding prompts and responses into the tensors the learner's forward passes use."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class SequenceBatch:
    """Prompts left-padded to width P, responses right-padded to width T.

    input_ids, attention_mask, position_ids: [B, P + T]
    response_ids, response_mask:             [B, T]
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    response_ids: torch.Tensor
    response_mask: torch.Tensor
    prompt_width: int

    @property
    def size(self) -> int:
        return self.input_ids.shape[0]

    def rows(self, index: torch.Tensor, device: torch.device) -> dict[str, torch.Tensor]:
        """Model inputs for a subset of sequences, without the last column (it predicts nothing)."""
        return {
            "input_ids": self.input_ids[index, :-1].to(device),
            "attention_mask": self.attention_mask[index, :-1].to(device),
            "position_ids": self.position_ids[index, :-1].to(device),
        }


def collate(prompt_ids: list[list[int]], response_ids: list[list[int]], pad_id: int) -> SequenceBatch:
    if any(len(r) == 0 for r in response_ids):
        raise ValueError("every response must have at least one token")
    batch, p_width, t_width = len(prompt_ids), max(map(len, prompt_ids)), max(map(len, response_ids))
    input_ids = torch.full((batch, p_width + t_width), pad_id, dtype=torch.long)
    attention = torch.zeros_like(input_ids)
    response = torch.full((batch, t_width), pad_id, dtype=torch.long)
    response_mask = torch.zeros((batch, t_width), dtype=torch.float32)
    for i, (p, r) in enumerate(zip(prompt_ids, response_ids)):
        input_ids[i, p_width - len(p) : p_width] = torch.tensor(p)
        input_ids[i, p_width : p_width + len(r)] = torch.tensor(r)
        attention[i, p_width - len(p) : p_width + len(r)] = 1
        response[i, : len(r)] = torch.tensor(r)
        response_mask[i, : len(r)] = 1.0
    position_ids = (attention.cumsum(dim=1) - 1).clamp(min=0)
    return SequenceBatch(input_ids, attention, position_ids, response, response_mask, p_width)


def response_logprobs(logits: torch.Tensor, response_ids: torch.Tensor) -> torch.Tensor:
    """logits: [R, T, V] at the positions that predict the response (the model's `logits_to_keep=T`);
    response_ids: [R, T] → [R, T] float32 log-probs."""
    return logits.float().log_softmax(dim=-1).gather(-1, response_ids.unsqueeze(-1)).squeeze(-1)
