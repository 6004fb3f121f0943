"""Single-stream objectives over a composite reward: `ppo` (ALGORITHMS.md §1)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import torch
from pydantic import Field

from services.objectives.base import Objective, RolloutTensors, Streams, normalize_streams, terminal_reward
from services.objectives.registry import ObjectiveConfig
from services.ppo.kl_controller import AdaptiveKLController

if TYPE_CHECKING:
    from services.config import RewardConfig


class PPOConfig(ObjectiveConfig):
    name: Literal["ppo"] = "ppo"
    kl_coef: float = Field(0.2, ge=0.0, description="Initial KL coefficient β_0.")
    target_kl: float | None = Field(0.5, gt=0.0, description="Per-token KL target θ_KL; None keeps β fixed.")
    kl_eta: float = Field(0.1, gt=0.0, description="KL controller step η.")
    value_coef: float = Field(0.5, ge=0.0)
    normalize_advantage: bool = Field(True, description="False = only centre the advantages.")


class KLPenalisedComposite(Objective):
    """ρ_t = −β·k_t + 1[t = T]·R(τ), one stream, adaptive β. Subclasses define R."""

    def __init__(self, config: Any, rewards: dict[str, "RewardConfig"]) -> None:
        super().__init__(config, rewards)
        self.kl = AdaptiveKLController(beta=config.kl_coef, target=config.target_kl, eta=config.kl_eta)
        self.last_mean_kl = 0.0

    @property
    def stream_names(self) -> list[str]:
        return ["composite"]

    def value_coefficients(self) -> torch.Tensor:
        return torch.tensor([self.config.value_coef])

    def composite_reward(self, scores: torch.Tensor) -> torch.Tensor:
        """scores: [B, N] → [B]."""
        raise NotImplementedError

    def build_streams(self, batch: RolloutTensors) -> Streams:
        # Rewards of this rollout use the current β; the controller's new β applies from the next one.
        per_token = -self.kl.beta * batch.kl * batch.mask + terminal_reward(
            self.composite_reward(batch.scores), batch.mask
        )
        self.last_mean_kl = float((batch.kl * batch.mask).sum() / batch.mask.sum().clamp(min=1.0))
        self.kl.update(self.last_mean_kl)
        return Streams(rewards=per_token.unsqueeze(-1))

    def mix_advantages(self, advantages: torch.Tensor, token_weight: torch.Tensor | None = None) -> torch.Tensor:
        return normalize_streams(advantages, scale=self.config.normalize_advantage)[:, 0]

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "kl": self.kl.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.kl.load_state_dict(state["kl"])

    def metrics(self) -> dict[str, float]:
        return {"kl_coef": self.kl.beta}


class FixedWeightPPO(KLPenalisedComposite):
    """`ppo`: R = Σ_i α_i r_i with fixed weights α (rewards.*.weight)."""

    config_cls = PPOConfig

    def composite_reward(self, scores: torch.Tensor) -> torch.Tensor:
        return scores @ self.weights
