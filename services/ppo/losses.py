"""PPO losses over a flat minibatch of token transitions."""

from __future__ import annotations

import torch


def clipped_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    clip_range: float,
    weight: torch.Tensor | None = None,
    importance_weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """−mean(min(r·A, clip(r, 1±ε)·A)), r = exp(logπ − logπ_old). All inputs: [M].

    weight: optional [M] per-token weight (0 drops a token, e.g. reward dropout); the mean is over
    weighted tokens.
    importance_weight: optional [M] off-policy correction (decoupled PPO: π_prox/π_behaviour, truncated;
    services/ppo/off_policy.py) multiplying each token's loss. It is not part of the normaliser: the loss
    estimates an expectation under the proximal policy from behaviour samples, averaged per sample.
    """
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range) * advantages
    per_token = -torch.minimum(unclipped, clipped)
    if importance_weight is not None:
        per_token = per_token * importance_weight.detach()
    if weight is None:
        loss = per_token.mean()
    else:
        loss = (per_token * weight).sum() / weight.sum().clamp(min=1.0)
    with torch.no_grad():
        stats = {
            "clip_fraction": ((ratio - 1.0).abs() > clip_range).float().mean().item(),
            "approx_kl": (old_logprobs - logprobs).mean().item(),
        }
    return loss, stats


def value_loss(
    values: torch.Tensor,
    returns: torch.Tensor,
    coefficients: torch.Tensor,
    old_values: torch.Tensor | None = None,
    clip: float | None = None,
) -> torch.Tensor:
    """Σ_j c_j · MSE(V_j, G_j). values, returns, old_values: [M, S]; coefficients: [S].

    With `clip`, the loss is the max of the plain and the clipped squared error (safe-rlhf style).
    """
    error = (values - returns) ** 2
    if clip is not None and old_values is not None:
        clipped = old_values + torch.clamp(values - old_values, -clip, clip)
        error = torch.maximum(error, (clipped - returns) ** 2)
    return (error.mean(dim=0) * coefficients).sum()
