"""The objective interface every training objective implements (pure torch, no Ray).

An objective turns sequence-level reward-model scores into per-token reward *streams*, mixes the
per-stream advantages into the one advantage the policy loss uses, and owns whatever state it learns
while training (KL coefficient, Lagrange multipliers, mirror-descent weights, …). The learner calls it in
this order every iteration (ALGORITHMS.md §0):

1. `build_streams(batch)`          after the rollout, before GAE (may update state, e.g. the KL controller)
2. per PPO minibatch:
   `mix_advantages(adv, valid)`    build A_mix from the per-stream advantages
   … policy and value step …
   `after_minibatch(reward_to_go)` e.g. one Lagrange multiplier step

State round-trips through `state_dict()` / `load_state_dict()` so the coordinator can own it between
iterations and persist it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch

from services.objectives.registry import ObjectiveConfig

if TYPE_CHECKING:
    from services.config import RewardConfig


@dataclass
class RolloutTensors:
    """One rollout, padded to the longest response.

    scores:       [B, N]  sequence-level score of each configured reward (config order)
    kl:           [B, T]  per-token log π_old(a_t|s_t) − log π_ref(a_t|s_t)
    ref_logprobs: [B, T]  log π_ref(a_t|s_t)
    mask:         [B, T]  1.0 on response tokens, 0.0 on padding
    """

    scores: torch.Tensor
    kl: torch.Tensor
    ref_logprobs: torch.Tensor
    mask: torch.Tensor


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


def normalize_streams(advantages: torch.Tensor, scale: bool = True) -> torch.Tensor:
    """Per-stream minibatch normalisation, ALGORITHMS.md §0. advantages: [M, S] → [M, S].

    scale=False only centres (the spec's `normalize_advantage=False`).
    """
    centred = advantages - advantages.mean(dim=0, keepdim=True)
    if not scale or advantages.shape[0] < 2:
        return centred
    return centred / (advantages.std(dim=0, keepdim=True) + 1e-8)


class Objective(ABC):
    """Base class; see the module docstring for the call order."""

    config_cls: ClassVar[type[ObjectiveConfig]]
    # "ppo": token-level PPO over reward streams; "l3m": alternating SFT / constraint steps (§10).
    update_kind: ClassVar[Literal["ppo", "l3m"]] = "ppo"

    def __init__(self, config: ObjectiveConfig, rewards: dict[str, "RewardConfig"]) -> None:
        self.config = config
        self.reward_names = list(rewards)
        self.weights = torch.tensor([r.weight for r in rewards.values()], dtype=torch.float32)
        self.thresholds = torch.tensor(
            [float("nan") if r.threshold is None else r.threshold for r in rewards.values()], dtype=torch.float32
        )
        self.directions = [r.direction for r in rewards.values()]

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

    # --- thresholds and state ------------------------------------------------------------------
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
