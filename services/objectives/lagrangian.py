"""Constrained PPO with squashed Lagrange multipliers: `mu_ppo`, `xi_ppo`, `all_ppo` (docs/ALGORITHMS.md §3–§6).

Streams (column order): one per reward, ρ^(i)_t = 1[t = T]·r_i, then the KL stream ρ^(KL)_t = −β·k_t
(All-PPO's `kl_in_streams=True` instead adds −β·k_t to every reward stream and has no KL stream).

Per minibatch (base.py call order): `mix_advantages` builds A_mix from the current squashed multipliers,
the learner steps, then `after_minibatch` takes one multiplier step on ℓ_λ with v̂_i = minibatch mean of
the reward-to-go U^(i) (detached): L·M'/B multiplier steps per rollout, as in the reference code.

Directions: μ-PPO is written for r_i ≥ θ_i; it also accepts `le` by flipping the sign of that constraint
(Lagrangian term −λ(v_i − θ_i) instead of +λ(v_i − θ_i): the constraint's advantage enters with −σ(λ_i) and
λ_i grows while v_i > θ_i). ξ-PPO needs `eq` and All-PPO `le`; other directions are a config error.
"""

from __future__ import annotations

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
from services.objectives.kl_controller import AdaptiveKLController

if TYPE_CHECKING:
    from services.rewards.config import RewardConfig

Squash = Literal["sigmoid", "tanh"]


class LagrangeMultipliers:
    """λ ∈ R^N with a squash, trained by SGD with momentum and a gradient-norm clip (§3).

    ℓ_λ = Σ_i squash(λ_i)·violation_i with the violation detached, so ∇ℓ_λ = squash'(λ)·violation; computed
    in closed form (no autograd) and applied exactly as torch.optim.SGD(momentum, dampening=0) would after
    clip_grad_norm_.
    """

    def __init__(self, n: int, squash: Squash, lr: float, momentum: float, max_grad_norm: float, init: float) -> None:
        self.squash = squash
        self.lr, self.momentum, self.max_grad_norm = lr, momentum, max_grad_norm
        self.raw = torch.full((n,), float(init))  # λ, unconstrained
        self.buffer = torch.zeros(n)  # SGD momentum buffer; zero start = torch's "buf = g" on step 1

    def values(self) -> torch.Tensor:
        """[N] squashed multipliers σ(λ) or tanh(λ)."""
        return torch.sigmoid(self.raw) if self.squash == "sigmoid" else torch.tanh(self.raw)

    def step(self, violation: torch.Tensor) -> None:
        """One SGD step on Σ_i squash(λ_i)·violation_i. violation: [N]."""
        s = self.values()
        grad = (s * (1 - s) if self.squash == "sigmoid" else 1 - s * s) * violation
        norm = float(grad.norm())
        if norm > self.max_grad_norm:  # clip_grad_norm_ semantics
            grad = grad * (self.max_grad_norm / (norm + 1e-6))
        self.buffer = self.momentum * self.buffer + grad
        self.raw = self.raw - self.lr * self.buffer

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"raw": self.raw.clone(), "buffer": self.buffer.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.raw = state["raw"].clone().float()
        self.buffer = state["buffer"].clone().float()


THRESHOLD_SCALE_FLOOR = 1e-3  # `violation_scale=threshold` divides by max(|θ|, this)


class ConstrainedPPOConfig(ObjectiveConfig):
    """Options shared by μ-, ξ- and All-PPO (defaults: [000] and its code)."""
    frozen_after_start: ClassVar[dict[str, str]] = {
        "multiplier_init": "only sets the initial value of learned state, which already exists",
        "multiplier_init_std": "only sets the initial value of learned state, which already exists",
        "seed": "only seeds the initial multiplier draw, which already happened",
    }

    uses_thresholds = True

    kl_coef: float = Field(0.2, ge=0.0, description="KL-stream coefficient β (initial β for All-PPO).")
    target_kl: float | None = Field(None, gt=0.0, description="Per-token KL target; None keeps β fixed.")
    kl_eta: float = Field(0.1, gt=0.0, description="KL controller step η.")
    multiplier_lr: float = Field(0.1, gt=0.0, description="SGD learning rate of the multipliers.")
    multiplier_momentum: float = Field(
        0.1, ge=0.0, lt=1.0, description="SGD momentum; kept low on purpose, high momentum makes λ sticky."
    )
    multiplier_max_grad_norm: float = Field(0.5, gt=0.0, description="Clip on the norm of ∇λ before each step.")
    violation_scale: Literal["raw", "threshold"] = Field(
        "raw",
        description="Units of the violation that drives λ: 'raw' = v̂ − θ in the reward's units (the papers); "
        f"'threshold' = (v̂ − θ)/max(|θ|, {THRESHOLD_SCALE_FLOOR:g}), the same multiplier speed whatever the "
        "reward's scale (§3).",
    )
    multiplier_init: float | None = Field(
        None, description="Initial raw λ for every constraint; None = one draw from N(0, multiplier_init_std²)."
    )
    multiplier_init_std: float = Field(0.01, ge=0.0, description="Std of the single initial draw.")
    seed: int = Field(0, description="Seed of the initial multiplier draw.")
    fixed_multipliers: bool = Field(False, description="Freeze λ (the code's `fixed_lagrange`).")
    normalize_advantage: bool = Field(
        True, description="Normalise each stream per minibatch; False = only centre (see §3 'Known limitation')."
    )
    value_coef: float = Field(0.5, ge=0.0, description="Value-loss coefficient of the reward heads, averaged over them.")
    kl_value_coef: float = Field(0.2, ge=0.0, description="Value-loss coefficient of the KL head.")


class MuPPOConfig(ConstrainedPPOConfig):
    constraint_direction = "ge"  # le also accepted (sign flip)
    name: Literal["mu_ppo"] = Field("mu_ppo", description="Minimise KL s.t. E[r_i] ≥ θ_i, sigmoid multipliers (§4).")

    def validate_rewards(self, rewards: dict[str, "RewardConfig"]) -> None:
        super().validate_rewards(rewards)
        require_directions("mu_ppo", rewards, ("ge", "le"), "use xi_ppo for equality constraints")


class XiPPOConfig(ConstrainedPPOConfig):
    constraint_direction = "eq"
    name: Literal["xi_ppo"] = Field("xi_ppo", description="Minimise KL s.t. E[r_i] = θ_i, tanh multipliers (§6).")

    def validate_rewards(self, rewards: dict[str, "RewardConfig"]) -> None:
        super().validate_rewards(rewards)
        require_directions("xi_ppo", rewards, ("eq",), "use mu_ppo for ≥/≤ constraints")


class AllPPOConfig(ConstrainedPPOConfig):
    frozen_after_start: ClassVar[dict[str, str]] = {
        "kl_in_streams": "changes the number of reward streams (value heads); start a new run",
    }
    constraint_direction = "le"
    name: Literal["all_ppo"] = Field("all_ppo", description="Maximise Σ E[r_i] s.t. E[r_i] ≤ θ_i (§5).")
    target_kl: float | None = Field(0.5, gt=0.0, description="Per-token KL target of the adaptive β.")
    kl_in_streams: bool = Field(
        False,
        description="Code-faithful: add −β·k_t to every reward stream instead of a separate KL stream. Its net "
        "KL weight N(N − S) − S turns into a bonus once S = Σσ is large (collapses in a bandit).",
    )

    def validate_rewards(self, rewards: dict[str, "RewardConfig"]) -> None:
        super().validate_rewards(rewards)
        require_directions("all_ppo", rewards, ("le",), "All-PPO maximises every reward up to a cap θ")


class ConstrainedPPO(Objective):
    """Shared §3 machinery; subclasses set the squash and the mixing/loss rule."""

    squash: ClassVar[Squash] = "sigmoid"

    def __init__(self, config: Any, rewards: dict[str, "RewardConfig"]) -> None:
        super().__init__(config, rewards)
        self.n = len(self.reward_names)
        self.signs = direction_signs(self.directions)  # [N] −1 for le
        init = config.multiplier_init
        if init is None:  # the code draws once and copies the value to every constraint
            init = float(torch.randn(1, generator=torch.Generator().manual_seed(config.seed))) * config.multiplier_init_std
        self.multipliers = LagrangeMultipliers(
            self.n, self.squash, config.multiplier_lr, config.multiplier_momentum, config.multiplier_max_grad_norm, init
        )
        self.kl = AdaptiveKLController(beta=config.kl_coef, target=config.target_kl, eta=config.kl_eta)
        self.last_mean_kl = 0.0
        self._estimate_sum = torch.zeros(self.n)  # Σ v̂ since the last rollout, for metrics
        self._estimate_count = 0

    @property
    def kl_separate(self) -> bool:
        return True

    @property
    def stream_names(self) -> list[str]:
        return self.reward_names + (["kl"] if self.kl_separate else [])

    def value_coefficients(self) -> torch.Tensor:
        # 0.5·mean_i MSE_i + 0.2·MSE_KL (§3 / the code's constraint_vf_coef, kl_vf_coef)
        heads = [self.config.value_coef / self.n] * self.n
        return torch.tensor(heads + ([self.config.kl_value_coef] if self.kl_separate else []))

    def build_streams(self, batch: RolloutTensors) -> Streams:
        kl_reward = -self.kl.beta * batch.kl * batch.mask  # [B, T], uses the β of this rollout
        rewards = terminal_reward(batch.scores.float(), batch.mask)  # [B, T, N]
        if self.kl_separate:
            rewards = torch.cat([rewards, kl_reward.unsqueeze(-1)], dim=-1)
        else:
            rewards = rewards + kl_reward.unsqueeze(-1)
        self.last_mean_kl = float((batch.kl * batch.mask).sum() / batch.mask.sum().clamp(min=1.0))
        self.kl.update(self.last_mean_kl)
        self._estimate_sum.zero_()
        self._estimate_count = 0
        return Streams(rewards=rewards)

    def combine(self, adv: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """adv: [M, S] normalised advantages, s: [N] squashed multipliers → [M]."""
        raise NotImplementedError

    def kl_weight(self, s: torch.Tensor) -> float:
        """Net weight of the KL advantage in A_mix, for logging."""
        raise NotImplementedError

    def violation(self, estimate: torch.Tensor) -> torch.Tensor:
        """[N] the factor multiplying squash(λ) in ℓ_λ, from v̂ [N]."""
        violation = self.signs * (estimate - self.thresholds)
        if self.config.violation_scale == "threshold":
            # A floor keeps θ = 0 finite; the gradient clip bounds the step whatever the ratio.
            violation = violation / self.thresholds.abs().clamp(min=THRESHOLD_SCALE_FLOOR)
        return violation

    def mix_advantages(self, advantages: torch.Tensor, token_weight: torch.Tensor | None = None) -> torch.Tensor:
        adv = normalize_streams(advantages, scale=self.config.normalize_advantage, weight=token_weight)
        return self.combine(adv, self.multipliers.values())

    def after_minibatch(self, reward_to_go: torch.Tensor) -> None:
        estimate = reward_to_go[:, : self.n].float().mean(dim=0)  # v̂_i: token-weighted mean of episode scores
        self._estimate_sum += estimate
        self._estimate_count += 1
        if not self.config.fixed_multipliers:
            self.multipliers.step(self.violation(estimate))

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "multipliers": self.multipliers.state_dict(), "kl": self.kl.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.multipliers.load_state_dict(state["multipliers"])
        self.kl.load_state_dict(state["kl"])

    def metrics(self) -> dict[str, float]:
        s = self.multipliers.values()
        out = {"kl_coef": self.kl.beta, "mean_kl": self.last_mean_kl, "weight/kl": self.kl_weight(s)}
        for i, name in enumerate(self.reward_names):
            out[f"multiplier/{name}"] = float(s[i])
            out[f"lambda/{name}"] = float(self.multipliers.raw[i])
            if self._estimate_count:
                out[f"estimate/{name}"] = float(self._estimate_sum[i] / self._estimate_count)
        return out


class MuPPO(ConstrainedPPO):
    """`mu_ppo` (§4): maximise v_KL s.t. v_i ≥ θ_i.

    A_mix = (N − Σσ)·A_KL + Σ_i d_i σ_i A_i, ℓ_λ = Σ_i σ_i·d_i(v̂_i − θ_i); d_i = +1 (ge) or −1 (le).
    """

    config_cls = MuPPOConfig
    squash = "sigmoid"

    def combine(self, adv: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return (self.n - s.sum()) * adv[:, self.n] + adv[:, : self.n] @ (self.signs * s)

    def kl_weight(self, s: torch.Tensor) -> float:
        return float(self.n - s.sum())


class XiPPO(MuPPO):
    """`xi_ppo` (§6): §4 with tanh, i.e. v_i = θ_i; multipliers in (−1, 1). Best method in [000]."""

    config_cls = XiPPOConfig
    squash = "tanh"


class AllPPO(ConstrainedPPO):
    """`all_ppo` (§5): maximise Σ_i v_i s.t. v_i ≤ θ_i, adaptive β.

    A_mix = (N − Σσ)·Σ_i A_i − Σ_i σ_i A_i + A_KL, ℓ_λ = Σ_i σ_i(θ_i − v̂_i) (the `le` sign of `violation`).
    """

    config_cls = AllPPOConfig
    squash = "sigmoid"

    @property
    def kl_separate(self) -> bool:
        return not self.config.kl_in_streams

    def combine(self, adv: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        rm = adv[:, : self.n]
        mixed = (self.n - s.sum()) * rm.sum(dim=1) - rm @ s
        return mixed + adv[:, self.n] if self.kl_separate else mixed

    def kl_weight(self, s: torch.Tensor) -> float:
        # kl_in_streams: −β k_t sits in every RM stream, so its net weight is N(N − S) − S (§5).
        total = float(s.sum())
        return 1.0 if self.kl_separate else self.n * (self.n - total) - total
