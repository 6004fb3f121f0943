"""Critic-free group advantages (GRPO, RLOO) per reward stream, docs/ALGORITHMS.md §0.

A rollout holds K completions of every prompt (`rollout.samples_per_prompt`), groups contiguous: rows
g·K … g·K + K − 1 answer prompt g. Each stream's sequence return R_s (the sum of its per-token rewards,
KL terms included) gets its own group baseline, so the objective still decides how streams mix:

    GRPO: A = (R − mean_g R) / max(std_g R, floor)     (std with Bessel's correction, as TRL computes it)
    RLOO: A = R − mean of the other K − 1 returns = K/(K − 1) · (R − mean_g R)

Every response token of a sequence gets its sequence's advantage (no critic, no discounting).
"""

from __future__ import annotations

from typing import Literal

import torch

GroupEstimator = Literal["grpo", "rloo"]


def sequence_returns(rewards: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """rewards: [B, T, S] per-token rewards, mask: [B, T] → [B, S] undiscounted sequence returns."""
    return (rewards * mask[..., None]).sum(dim=1)


def group_baselined(returns: torch.Tensor, group_size: int, estimator: GroupEstimator, std_floor: float) -> torch.Tensor:
    """returns: [B, S] with B a multiple of `group_size` (contiguous groups) → [B, S] advantages."""
    batch, streams = returns.shape
    if group_size < 2 or batch % group_size:
        raise ValueError(f"group advantages need groups of ≥ 2 contiguous samples; got {batch} rows in groups of {group_size}")
    grouped = returns.view(batch // group_size, group_size, streams)
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    if estimator == "grpo":
        advantages = centred / grouped.std(dim=1, keepdim=True).clamp(min=std_floor)
    elif estimator == "rloo":
        advantages = centred * (group_size / (group_size - 1))
    else:
        raise ValueError(f"unknown group estimator '{estimator}' (grpo, rloo)")
    return advantages.reshape(batch, streams)


def group_advantages(
    rewards: torch.Tensor, mask: torch.Tensor, group_size: int, estimator: GroupEstimator, std_floor: float
) -> torch.Tensor:
    """rewards: [B, T, S], mask: [B, T] → [B, T, S]: each sequence's group advantage on its response tokens."""
    advantages = group_baselined(sequence_returns(rewards, mask), group_size, estimator, std_floor)
    return advantages[:, None, :] * mask[..., None]
