"""The objective interface every training objective implements (pure torch, no Ray).

An objective turns sequence-level reward-model scores into per-token reward *streams*, mixes the
per-stream advantages into the one advantage the policy loss uses, and owns whatever state it learns
while training (KL coefficient, Lagrange multipliers, mirror-descent weights, …). The learner calls it in
this order every iteration (docs/ALGORITHMS.md §0):

1. `build_streams(batch)`          after the rollout, before GAE (may update state, e.g. the KL controller)
2. per PPO minibatch:
   `mix_advantages(adv, weight)`   build A_mix from the per-stream advantages. Call it exactly once per
                                   minibatch, before the policy step: `ppo_lagrangian` takes its λ step
                                   here (safe-rlhf updates λ at the start of every PPO step).
   … policy and value step …
   `after_minibatch(reward_to_go)` e.g. one Lagrange multiplier step (μ/ξ/All-PPO)

Objectives with `update_kind == "l3m"` are not PPO: they use their own hooks (services/objectives/barrier.py
documents the call order). The driver also reads `sample_from_reference` / `rollout_temperature` (off-policy
reward dropout: the rollout samples from the frozen reference at that temperature; see dropout.py).

State round-trips through `state_dict()` / `load_state_dict()` so the coordinator can own it between
iterations and persist it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch

from services.objectives.options import ObjectiveConfig

if TYPE_CHECKING:
    from services.rewards.config import RewardConfig


@dataclass
class RolloutTensors:
    """One rollout, padded to the longest response.

    scores:       [B, N]  sequence-level score of each configured reward (config order)
    kl:           [B, T]  per-token log π_old(a_t|s_t) − log π_ref(a_t|s_t)
    ref_logprobs: [B, T]  log π_ref(a_t|s_t)
    mask:         [B, T]  1.0 on response tokens, 0.0 on padding
    behaviour_logprobs: [B, T] or None. Log-probs under the distribution that actually sampled the rollout
                  when that is not the policy (off-policy reward dropout: the frozen reference at
                  temperature T, log β_T). None = the policy sampled it. The learner must then use these,
                  not the policy's, as old log-probs in the PPO ratio.
    """

    scores: torch.Tensor
    kl: torch.Tensor
    ref_logprobs: torch.Tensor
    mask: torch.Tensor
    behaviour_logprobs: torch.Tensor | None = None


@dataclass
class Streams:
    """rewards: [B, T, S] per-token reward of each stream; sequence_weight: [B] policy-loss weight or None."""

    rewards: torch.Tensor
    sequence_weight: torch.Tensor | None = None


def terminal_reward(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Place a sequence-level value on the last response token.

    values: [B] or [B, K]; mask: [B, T] → [B, T] or [B, T, K].
    """
    last = (mask.sum(dim=1).long() - 1).clamp(min=0)  # [B]
    one_hot = torch.zeros_like(mask)
    one_hot[torch.arange(mask.shape[0]), last] = 1.0
    one_hot = one_hot * mask
    if values.dim() == 1:
        return one_hot * values[:, None]
    return one_hot[:, :, None] * values[:, None, :]


def normalize_streams(
    advantages: torch.Tensor, scale: bool = True, weight: torch.Tensor | None = None, center: bool = True
) -> torch.Tensor:
    """Per-stream minibatch normalisation, docs/ALGORITHMS.md §0. advantages: [M, S] → [M, S].

    scale=False only centres (the spec's `normalize_advantage=False`); center=False (with scale=False)
    returns the advantages unchanged.
    weight: [M] or None. Tokens with weight 0 (e.g. dropped by reward dropout) are left out of the mean and
    std and get advantage 0.
    """
    if weight is not None:
        keep = weight > 0
        if bool(keep.all()):
            return normalize_streams(advantages, scale, None, center)
        out = torch.zeros_like(advantages)
        if bool(keep.any()):
            out[keep] = normalize_streams(advantages[keep], scale, None, center)
        return out
    if not center and not scale:
        return advantages
    centred = advantages - advantages.mean(dim=0, keepdim=True)
    if not scale or advantages.shape[0] < 2:
        return centred
    return centred / (advantages.std(dim=0, keepdim=True) + 1e-8)


def require_directions(
    objective: str, rewards: dict[str, "RewardConfig"], allowed: tuple[str, ...], hint: str
) -> None:
    """Raise ValueError naming the first reward whose constraint direction the objective cannot express.

    An unset direction (None) means the objective's own `constraint_direction` and is always accepted.
    """
    for name, reward in rewards.items():
        if reward.direction is not None and reward.direction not in allowed:
            raise ValueError(
                f"objective {objective} supports constraint direction {'/'.join(allowed)} only, but reward "
                f"'{name}' has direction '{reward.direction}' (set rewards.{name}.direction={allowed[0]}; {hint})"
            )


def direction_signs(directions: list[str]) -> torch.Tensor:
    """[N] +1 for `ge` and `eq`, −1 for `le`: multiplies r − θ so that "above target" is positive for ge."""
    return torch.tensor([-1.0 if d == "le" else 1.0 for d in directions])


class Objective(ABC):
    """Base class; see the module docstring for the call order."""

    config_cls: ClassVar[type[ObjectiveConfig]]
    # "ppo": token-level PPO over reward streams; "l3m": alternating SFT / constraint steps (§10).
    update_kind: ClassVar[Literal["ppo", "l3m"]] = "ppo"
    # Off-policy rollouts (reward_dropout with behaviour_sampling): sample from the frozen reference weights
    # at `rollout_temperature` and return log β_T as `RolloutTensors.behaviour_logprobs`.
    sample_from_reference: bool = False
    rollout_temperature: float | None = None

    def __init__(self, config: ObjectiveConfig, rewards: dict[str, "RewardConfig"]) -> None:
        self.config = config
        self.reward_names = list(rewards)
        self.weights = torch.tensor([r.weight for r in rewards.values()], dtype=torch.float32)
        self.thresholds = torch.tensor(
            [r.threshold_value() for r in rewards.values()], dtype=torch.float32
        )
        own = type(config).constraint_direction or "ge"
        self.directions = [r.direction or own for r in rewards.values()]

    # --- streams -----------------------------------------------------------------------------
    @property
    @abstractmethod
    def stream_names(self) -> list[str]:
        """One name per reward stream / value head."""

    @abstractmethod
    def value_coefficients(self) -> torch.Tensor:
        """[S] weight of each stream's value-loss term."""

    def discount(self, gamma: float, gae_lambda: float) -> tuple[float, float]:
        """(γ, λ) for GAE; objectives that fix their own (PPO-Lagrangian uses γ = 1) override this."""
        return gamma, gae_lambda

    value_clip: float | None = None  # clipped value loss range; None = plain MSE (RL4LMs)

    @abstractmethod
    def build_streams(self, batch: RolloutTensors) -> Streams:
        """Per-token reward streams for this rollout. May update state (e.g. the KL coefficient)."""

    @abstractmethod
    def mix_advantages(self, advantages: torch.Tensor, token_weight: torch.Tensor | None = None) -> torch.Tensor:
        """advantages: [M, S] raw per-stream advantages of one minibatch → [M] mixed advantage.

        token_weight: [M] policy-loss weight of each token (from `Streams.sequence_weight`), or None.
        """

    def after_minibatch(self, reward_to_go: torch.Tensor) -> None:
        """reward_to_go: [M, S] undiscounted reward-to-go of the minibatch's tokens."""

    def observe_evaluation(self, iteration: int, evaluation: dict[str, float]) -> None:
        """Called at the start of update `iteration`, before `build_streams`, whenever the current policy was
        evaluated on held-out data since the previous update (at most once per update).

        evaluation: `eval/score` (the eval_score being maximised), `eval/reward/<name>` (held-out mean of each
        reward), `eval/metric/<metric>`, … (see services/evaluation/run_eval.py). nm_ppo moves its thresholds
        here (services/objectives/nm_ppo.py); other objectives ignore it.
        """

    # --- thresholds and state ------------------------------------------------------------------
    def constrained_rewards(self) -> list[str]:
        """The rewards this objective treats as constraints (with a threshold it uses); none for objectives
        that only weight rewards (ppo, fast_rl, reward_dropout), so those neither show nor record thresholds."""
        if not type(self.config).uses_thresholds:
            return []
        names = getattr(self, "constraint_names", None)
        return list(names) if names is not None else list(self.reward_names)

    def set_threshold(self, reward: str, value: float) -> None:
        self.thresholds[self.reward_names.index(reward)] = value

    def state_dict(self) -> dict[str, Any]:
        return {"thresholds": self.thresholds.clone(), "weights": self.weights.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.thresholds = state["thresholds"].clone().float()
        self.weights = state["weights"].clone().float()

    def metrics(self) -> dict[str, float]:
        """Scalar statistics of the objective's state for logging (e.g. multipliers, KL coefficient)."""
        return {}
