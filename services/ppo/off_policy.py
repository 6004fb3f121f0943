"""Off-policy correction for overlapped rollouts (`trainer.async_rollout=true`), independent of Ray.

With overlap, the batch trained at iteration k was sampled by the policy of one update earlier (the
*behaviour* policy π_b). We use decoupled PPO (Hilton et al. 2021, "Batch size-invariance for policy
optimization", eq. 2): the *proximal* policy π_prox is the learner's policy at the start of the update
(its log-probs are the learner's recomputed "old" log-probs), the clipped ratio is π_θ / π_prox as in
plain PPO, and each token's loss is multiplied by the importance weight π_prox / π_b, which makes the
expectation over π_b-samples an expectation over π_prox-samples. The weight is truncated at `cap`
(as V-trace / IMPALA truncate) so a token the stale policy sampled but the current one finds unlikely
cannot dominate a minibatch; truncation biases toward π_b, which one update of staleness keeps small.

Both distributions are the *unwarped* model distributions (before temperature / top-k), the same
approximation the rest of the learner makes about the sampler.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class BehaviourLogprobs:
    """What the rollout says about how it sampled a batch.

    logprobs:  [B, T] log π_b(a_t|s_t) as returned by the rollout backend, 0.0 on padding.
    staleness: [B]    learner updates between the behaviour weights and the weights at train time
                      (0 = on-policy: the correction is skipped for that sequence).
    """

    logprobs: torch.Tensor
    staleness: torch.Tensor


def pad_logprobs(rows: list[list[float]], width: int) -> torch.Tensor:
    """Ragged per-token log-probs → [B, width] float32, right-padded with 0.0."""
    out = torch.zeros(len(rows), width, dtype=torch.float32)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row[:width], dtype=torch.float32)
    return out


def truncated_importance_weights(
    proximal_logprobs: torch.Tensor,
    behaviour_logprobs: torch.Tensor,
    mask: torch.Tensor,
    cap: float,
    stale: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Per-token w = min(π_prox / π_b, cap); w = 1 where the sequence is not stale.

    proximal_logprobs, behaviour_logprobs, mask: [B, T]; stale: [B] bool (None = every sequence).
    Returns (weights [B, T] with 0 on padding, stats over response tokens: the mean weight
    `async/is_weight_mean`, the fraction truncated at the cap `async/is_truncated_fraction`, and the
    largest untruncated ratio `async/is_ratio_max`). Weights carry no gradient: π_prox and π_b are fixed.
    """
    if cap <= 0:
        raise ValueError(f"importance-weight cap must be positive, got {cap}")
    with torch.no_grad():
        ratio = torch.exp(proximal_logprobs - behaviour_logprobs)
        if stale is not None:
            ratio = torch.where(stale[:, None], ratio, torch.ones_like(ratio))
        weights = ratio.clamp(max=cap) * mask
        n = mask.sum().clamp(min=1.0)
        on_tokens = mask > 0
        stats = {
            "async/is_weight_mean": float(weights.sum() / n),
            "async/is_truncated_fraction": float(((ratio > cap) & on_tokens).float().sum() / n),
            "async/is_ratio_max": float(ratio[on_tokens].max()) if bool(on_tokens.any()) else 1.0,
        }
    return weights, stats
