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


def indexed_group_baselined(returns: torch.Tensor, groups: torch.Tensor, estimator: GroupEstimator, std_floor: float) -> torch.Tensor:
    """returns: [B, S], groups: [B] group index of each row (groups of any size ≥ 1, e.g. after samples were
    skipped for a bad reward) → [B, S]. The baseline uses only the rows present; a group left with one row
    gets advantage 0 (no baseline to compare it with). Same numbers as `group_baselined` on full groups."""
    batch, streams = returns.shape
    n_groups = int(groups.max()) + 1
    counts = torch.zeros(n_groups, dtype=returns.dtype).index_add_(0, groups, torch.ones(batch, dtype=returns.dtype))
    mean = torch.zeros(n_groups, streams, dtype=returns.dtype).index_add_(0, groups, returns) / counts.clamp(min=1)[:, None]
    centred = returns - mean[groups]
    n = counts[groups][:, None]
    if estimator == "grpo":
        var = torch.zeros(n_groups, streams, dtype=returns.dtype).index_add_(0, groups, centred**2) / (counts - 1).clamp(min=1)[:, None]
        return centred / var.sqrt().clamp(min=std_floor)[groups]
    if estimator == "rloo":
        return torch.where(n > 1, centred * n / (n - 1).clamp(min=1), torch.zeros_like(centred))
    raise ValueError(f"unknown group estimator '{estimator}' (grpo, rloo)")


def group_advantages(
    rewards: torch.Tensor, mask: torch.Tensor, group_size: int, estimator: GroupEstimator, std_floor: float,
    groups: torch.Tensor | None = None,
) -> torch.Tensor:
    """rewards: [B, T, S], mask: [B, T] → [B, T, S]: each sequence's group advantage on its response tokens.
    `groups` ([B] group index per row) replaces contiguous groups of `group_size` when rows were dropped."""
    returns = sequence_returns(rewards, mask)
    if groups is None:
        advantages = group_baselined(returns, group_size, estimator, std_floor)
    else:
        advantages = indexed_group_baselined(returns, groups, estimator, std_floor)
    return advantages[:, None, :] * mask[..., None]
