"""`ppo_lagrangian`: safe-rlhf PPO-Lag generalised to several RM constraints (docs/ALGORITHMS.md §11).

Maximise E[R] s.t. E[c_j] ≤ 0, with R = Σ_i α_i r_i over the *unconstrained* rewards (R = 0 when every
reward is a constraint, leaving the KL term as the task) and one cost per constraint reward:
c_j = θ_j − r_j (`ge`) or r_j − θ_j (`le`), i.e. d = 0 after the shift.

Streams (column order): `reward`: −β k_t + 1[T]·R, then `cost/<name>`: +β k_t + 1[T]·c_j, each clipped
per token to ±score_clip. The KL enters every stream so its net weight in A stays −β whatever λ is.
γ = 1 (`discount`), two-or-more critics with a clipped value loss (`value_clip`).

Order (safe-rlhf `rl_step`):
- `build_streams`: push the rollout's episode scores into the window (deque of `cost_window` episodes).
- `mix_advantages`, i.e. the start of every PPO step: J̄_c = window mean; if step ≥ delay,
  log λ_j += lr·J̄_cj·λ_j (SGD on −J̄_c·e^{log λ}), clamp log λ ≤ log λ_max; then
  A = (A_r − Σ_j λ_j A_cj)/(1 + Σ_j λ_j) with λ detached. The learner calls it exactly once per minibatch.
The window stores scores, not costs, so a threshold changed mid-run applies to the whole window at once
(the cost is linear in r).

Sign conventions differ between papers (safe-rlhf issue #171 reads the paper's threshold as −d): here a
constraint is always "keep r_j on the right side of θ_j"; check the sign of a copied threshold.
"""

from __future__ import annotations

import math
from collections import deque
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from pydantic import Field

from services.objectives.base import (
    Objective,
    RolloutTensors,
    Streams,
    direction_signs,
    normalize_streams,
    require_directions,
    terminal_reward,
)
from services.objectives.options import ObjectiveConfig

if TYPE_CHECKING:
    from services.rewards.config import RewardConfig


class PPOLagrangianConfig(ObjectiveConfig):
    frozen_after_start: ClassVar[dict[str, str]] = {
        "lambda_init": "only sets the initial value of learned state, which already exists",
        "constraints": "changes the number of reward streams (value heads); start a new run",
    }
    name: Literal["ppo_lagrangian"] = Field("ppo_lagrangian", description="safe-rlhf PPO-Lag with one cost per constraint (§11).")
    uses_thresholds = True
    constraint_direction = "ge"  # le also accepted

    constraints: list[str] | None = Field(
        None,
        description="Rewards that are constraints (cost θ − r for ge, r − θ for le); None = every reward with a "
        "threshold. The others form the maximised reward R = Σ α_i r_i.",
    )
    lambda_init: float = Field(1.0, gt=0.0, description="Initial λ of every constraint.")
    lambda_lr: float = Field(0.1, gt=0.0, description="SGD learning rate on log λ (no momentum).")
    # safe-rlhf's argparse default is None, but the update is multiplicative in λ and diverges (log λ overflowed
    # in a bandit at policy lr 0.05), so the spec says always set it; 5 is the safe-rlhf scripts' value.
    lambda_max: float | None = Field(5.0, gt=0.0, description="Upper clamp on λ; None = unbounded (not recommended).")
    delay: int = Field(0, ge=0, description="PPO steps before λ starts updating.")
    cost_window: int = Field(128, gt=0, description="Episodes in the cost window whose mean is J̄_c.")
    kl_coef: float = Field(0.02, ge=0.0, description="KL coefficient β (safe-rlhf default; its scripts use 0.01).")
    score_clip: float = Field(50.0, gt=0.0, description="Per-token clip of every stream.")
    value_clip: float | None = Field(5.0, gt=0.0, description="Clipped value loss range; None = plain MSE.")
    gamma: float = Field(1.0, ge=0.0, le=1.0, description="Discount γ (GAE λ comes from the trainer).")
    normalize_advantage: bool = Field(False, description="Normalise each stream per minibatch (safe-rlhf does not).")
    center_advantage: bool = Field(False, description="Centre each stream per minibatch (safe-rlhf does not).")
    value_coef: float = Field(0.5, ge=0.0, description="Value-loss coefficient of each critic.")
    fixed_multipliers: bool = Field(False, description="Freeze λ.")

    def constraint_names(self, rewards: dict[str, "RewardConfig"]) -> list[str]:
        if self.constraints is not None:
            return list(self.constraints)
        return [name for name, r in rewards.items() if r.threshold is not None]

    def validate_rewards(self, rewards: dict[str, "RewardConfig"]) -> None:
        # Only constraint rewards need thresholds, so the base check (every reward) is not used.
        names = self.constraint_names(rewards)
        unknown = [n for n in names if n not in rewards]
        if unknown:
            raise ValueError(f"objective ppo_lagrangian: constraints name unknown reward(s) {unknown} (rewards: {list(rewards)})")
        if not names:
            raise ValueError("objective ppo_lagrangian needs at least one constraint: set rewards.NAME.threshold=VALUE")
        missing = [n for n in names if rewards[n].threshold is None]
        if missing:
            raise ValueError(
                f"objective ppo_lagrangian needs a threshold for constraint reward(s): {', '.join(missing)} "
                f"(set rewards.{missing[0]}.threshold=VALUE)"
            )
        require_directions(
            "ppo_lagrangian", {n: rewards[n] for n in names}, ("ge", "le"), "a cost constraint is an inequality"
        )


class PPOLagrangian(Objective):
    config_cls = PPOLagrangianConfig

    def __init__(self, config: Any, rewards: dict[str, "RewardConfig"]) -> None:
        super().__init__(config, rewards)
        self.constraint_names = config.constraint_names(rewards)
        self.constraint_index = torch.tensor([self.reward_names.index(n) for n in self.constraint_names])
        self.reward_mask = torch.ones(len(self.reward_names))
        self.reward_mask[self.constraint_index] = 0.0  # which rewards form R
        self.signs = direction_signs([self.directions[i] for i in self.constraint_index.tolist()])
        k = len(self.constraint_names)
        self.log_lambda = torch.full((k,), math.log(config.lambda_init))
        self.window: deque[list[float]] = deque(maxlen=config.cost_window)  # per episode: constraint scores [K]
        self.global_step = 0
        self.value_clip = config.value_clip

    @property
    def stream_names(self) -> list[str]:
        return ["reward"] + [f"cost/{n}" for n in self.constraint_names]

    def value_coefficients(self) -> torch.Tensor:
        return torch.full((1 + len(self.constraint_names),), self.config.value_coef)

    def discount(self, gamma: float, gae_lambda: float) -> tuple[float, float]:
        return self.config.gamma, gae_lambda

    def costs(self, constraint_scores: torch.Tensor) -> torch.Tensor:
        """c_j = sign_j·(θ_j − r_j). constraint_scores: [..., K] → [..., K]."""
        return self.signs * (self.thresholds[self.constraint_index] - constraint_scores)

    def build_streams(self, batch: RolloutTensors) -> Streams:
        scores = batch.scores.float()
        constraint_scores = scores[:, self.constraint_index]  # [B, K]
        self.window.extend(constraint_scores.tolist())
        kl = self.config.kl_coef * batch.kl * batch.mask  # [B, T]
        reward = terminal_reward(scores @ (self.weights * self.reward_mask), batch.mask) - kl
        cost = terminal_reward(self.costs(constraint_scores), batch.mask) + kl.unsqueeze(-1)
        streams = torch.cat([reward.unsqueeze(-1), cost], dim=-1)
        clip = self.config.score_clip
        return Streams(rewards=streams.clamp(-clip, clip) * batch.mask.unsqueeze(-1))

    def mean_cost(self) -> torch.Tensor:
        """J̄_c [K]: mean cost over the window (NaN when empty)."""
        if not self.window:
            return torch.full((len(self.constraint_names),), float("nan"))
        return self.costs(torch.tensor(list(self.window)).mean(dim=0))

    def update_multipliers(self) -> None:
        """One λ step (start of a PPO step): log λ ← log λ + lr·J̄_c·λ, clamped to log λ_max."""
        if self.global_step >= self.config.delay and self.window and not self.config.fixed_multipliers:
            self.log_lambda = self.log_lambda + self.config.lambda_lr * self.mean_cost() * self.log_lambda.exp()
            if self.config.lambda_max is not None:
                self.log_lambda = self.log_lambda.clamp(max=math.log(self.config.lambda_max))
        self.global_step += 1

    def combine(self, adv: torch.Tensor) -> torch.Tensor:
        """adv: [M, 1 + K] → (A_r − Σ_j λ_j A_cj)/(1 + Σ_j λ_j), λ detached."""
        lam = self.log_lambda.exp()
        return (adv[:, 0] - adv[:, 1:] @ lam) / (1.0 + lam.sum())

    def mix_advantages(self, advantages: torch.Tensor, token_weight: torch.Tensor | None = None) -> torch.Tensor:
        self.update_multipliers()
        adv = normalize_streams(
            advantages, scale=self.config.normalize_advantage, weight=token_weight, center=self.config.center_advantage
        )
        return self.combine(adv)

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "log_lambda": self.log_lambda.clone(),
            "window": [list(row) for row in self.window],
            "global_step": self.global_step,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.log_lambda = state["log_lambda"].clone().float()
        self.window = deque((list(r) for r in state["window"]), maxlen=self.config.cost_window)
        self.global_step = int(state["global_step"])

    def metrics(self) -> dict[str, float]:
        lam, cost = self.log_lambda.exp(), self.mean_cost()
        out = {"kl_coef": self.config.kl_coef, "ppo_steps": float(self.global_step)}
        for j, name in enumerate(self.constraint_names):
            out[f"multiplier/{name}"] = float(lam[j])
            out[f"cost/{name}"] = float(cost[j])
        return out
