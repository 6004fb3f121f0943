"""Generalised advantage estimation over padded, right-aligned episodes (docs/ALGORITHMS.md §0)."""

from __future__ import annotations

import torch


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-stream GAE, truncated at the end of each episode.

    rewards, values: [B, T] or [B, T, S]; mask: [B, T] (1 on response tokens, a prefix of each row).
    Returns (advantages, returns), both shaped like `rewards`; returns G_t = Â_t + V(s_t).
    Padding positions get 0 advantage.
    """
    m = mask if rewards.dim() == 2 else mask.unsqueeze(-1)
    advantages = torch.zeros_like(rewards)
    next_adv = torch.zeros_like(rewards[:, 0])
    next_value = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        # The next step is non-terminal iff token t+1 is still a response token.
        nonterminal = m[:, t + 1] if t + 1 < rewards.shape[1] else torch.zeros_like(m[:, 0])
        delta = rewards[:, t] + gamma * next_value * nonterminal - values[:, t]
        next_adv = (delta + gamma * lam * nonterminal * next_adv) * m[:, t]
        advantages[:, t] = next_adv
        next_value = values[:, t]
    return advantages, (advantages + values) * m


def reward_to_go(rewards: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Undiscounted U_t = Σ_{t'≥t} ρ_{t'} within each episode. rewards: [B, T] or [B, T, S]."""
    m = mask if rewards.dim() == 2 else mask.unsqueeze(-1)
    masked = rewards * m
    return torch.flip(torch.cumsum(torch.flip(masked, dims=[1]), dim=1), dims=[1]) * m
