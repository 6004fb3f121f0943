"""One PPO update's objective hooks without a language model: exercise an objective on bandits.

For one-token episodes (T = 1) with no critic (V ≡ 0), GAE gives Â = U = ρ: each stream's per-token reward
is its advantage and its reward-to-go. This runs the objective's hooks in exactly the learner's order
(docs/ALGORITHMS.md §0): `build_streams`, then per minibatch `mix_advantages` → the caller's policy step
→ `after_minibatch`. tests/objectives/bandit.py drives it with a tabular softmax policy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from services.objectives.base import Objective, RolloutTensors

PolicyStep = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], None]


def one_token_update(objective: Objective, rollout: RolloutTensors, minibatches: Sequence[torch.Tensor], policy_step: PolicyStep) -> None:
    """rollout: a T = 1 rollout ([B, N] scores, [B, 1] kl/mask). minibatches: index tensors into the batch.
    policy_step(index [M], mixed advantage [M], token weight [M] or None) takes one policy-gradient step."""
    streams = objective.build_streams(rollout)
    advantages = streams.rewards[:, 0, :]  # [B, S]
    weight = streams.sequence_weight  # [B] or None (all 1)
    for index in minibatches:
        w = None if weight is None else weight[index]
        policy_step(index, objective.mix_advantages(advantages[index], w), w)
        objective.after_minibatch(advantages[index])
