"""Bandit machinery for the behavioural tests of docs/ALGORITHMS.md: one-token episodes through the objectives.

An episode is one arm pull (T = 1): kl = log π(a) − log π_0(a), scores [B, N] = the arm's rewards. With no
critic (V ≡ 0) and T = 1, GAE gives Â = ρ and the reward-to-go U = ρ, so each stream's per-token reward *is*
its advantage; the objective's `mix_advantages` then supplies the minibatch baseline, exactly as for the
learner. The policy is a softmax over arm logits trained by REINFORCE on the mixed advantage.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from services.rewards.config import RewardConfig
from services.objectives.base import Objective, RolloutTensors
from services.objectives.registry import build_objective, objective_config_from_dict
from services.ppo.objective_step import one_token_update


def make_objective(name: str, rewards: dict[str, dict], **options: object) -> Objective:
    """Build and validate an objective from plain dicts, as the run config would."""
    configs = {k: RewardConfig(**{"kind": "length", **v}) for k, v in rewards.items()}
    config = objective_config_from_dict({"name": name, **options})
    config.validate_rewards(configs)
    return build_objective(config, configs)


class SoftmaxPolicy:
    """π = softmax(logits) over K arms; π_0 is fixed (uniform by default)."""

    def __init__(self, n_arms: int, ref_logits: np.ndarray | None = None) -> None:
        self.logits = np.zeros(n_arms)
        ref = np.zeros(n_arms) if ref_logits is None else np.asarray(ref_logits, dtype=float)
        self.ref_logp = ref - np.logaddexp.reduce(ref)

    @property
    def logp(self) -> np.ndarray:
        return self.logits - np.logaddexp.reduce(self.logits)

    @property
    def probs(self) -> np.ndarray:
        return np.exp(self.logp)

    def kl(self) -> float:
        """KL(π‖π_0)."""
        p = self.probs
        return float((p * (self.logp - self.ref_logp)).sum())

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.choice(len(self.logits), size=n, p=self.probs)

    def reinforce(self, actions: np.ndarray, advantages: np.ndarray, lr: float, weight: np.ndarray | None = None) -> None:
        """Gradient ascent on mean_j c_j A_j log π(a_j), c = weight/Σweight (1/M without a weight), like the
        learner's weighted policy loss. ∇_logits log π(a) = onehot(a) − π."""
        c = np.full(len(actions), 1.0 / len(actions)) if weight is None else weight / max(weight.sum(), 1.0)
        ca = c * advantages
        grad = np.bincount(actions, weights=ca, minlength=len(self.logits)) - self.probs * ca.sum()
        self.logits = self.logits + lr * grad


def one_token_batch(scores: np.ndarray, logp: np.ndarray, ref_logp: np.ndarray) -> RolloutTensors:
    """scores: [B, N]; logp, ref_logp: [B] log-probs of the pulled arms → a T = 1 rollout."""
    b = scores.shape[0]
    ref = torch.as_tensor(ref_logp, dtype=torch.float32).view(b, 1)
    return RolloutTensors(
        scores=torch.as_tensor(scores, dtype=torch.float32),
        kl=torch.as_tensor(logp, dtype=torch.float32).view(b, 1) - ref,
        ref_logprobs=ref,
        mask=torch.ones(b, 1),
    )


def ppo_iteration(
    objective: Objective,
    policy: SoftmaxPolicy,
    arm_scores: np.ndarray,
    rng: np.random.Generator,
    batch: int,
    lr: float,
    minibatches: int = 1,
) -> np.ndarray:
    """One rollout + update through `services.ppo.objective_step.one_token_update`: build_streams →
    (mix_advantages → REINFORCE step → after_minibatch) per minibatch.

    arm_scores: [K, N] reward of each arm. Returns the pulled arms [batch].
    """
    actions = policy.sample(rng, batch)
    rollout = one_token_batch(arm_scores[actions], policy.logp[actions], policy.ref_logp[actions])
    order = rng.permutation(batch) if minibatches > 1 else np.arange(batch)
    indices = [torch.from_numpy(idx) for idx in np.array_split(order, minibatches)]

    def step(index: torch.Tensor, mixed: torch.Tensor, weight: torch.Tensor | None) -> None:
        idx = index.numpy()
        policy.reinforce(actions[idx], mixed.double().numpy(), lr, None if weight is None else weight.double().numpy())

    one_token_update(objective, rollout, indices, step)
    return actions


def run(
    objective: Objective,
    policy: SoftmaxPolicy,
    arm_scores: np.ndarray,
    seed: int,
    iterations: int,
    batch: int,
    lr: float,
    minibatches: int = 1,
    record: Callable[[SoftmaxPolicy, Objective], object] | None = None,
) -> list[object]:
    """Run `iterations` PPO iterations; returns record(policy, objective) after each (default: π)."""
    rng = np.random.default_rng(seed)
    record = record or (lambda p, _o: p.probs)
    history = []
    for _ in range(iterations):
        ppo_iteration(objective, policy, arm_scores, rng, batch, lr, minibatches)
        history.append(record(policy, objective))
    return history
