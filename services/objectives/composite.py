"""Single-stream objectives over a composite reward (docs/ALGORITHMS.md §1, §2, §8).

All three share one per-token stream ρ_t = −β·k_t + 1[t = T]·R(τ) with the adaptive KL controller of §1;
they differ only in the sequence-level composite R:

- `ppo`:     R = Σ_i α_i r_i with fixed weights α (rewards.*.weight).
- `ppo_sat`: R = −Σ_i α_i (r_i − θ_i)², target satisfaction per sample.
- `fast_rl`: R = Σ_i w_i r_i with max–min mirror-descent weights w, updated from each batch before use.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any, Literal

import torch
from pydantic import Field, model_validator

from services.objectives.base import Objective, RolloutTensors, Streams, normalize_streams, terminal_reward
from services.objectives.options import ObjectiveConfig
from services.objectives.kl_controller import AdaptiveKLController

if TYPE_CHECKING:
    from services.rewards.config import RewardConfig

logger = logging.getLogger(__name__)


class PPOConfig(ObjectiveConfig):
    name: Literal["ppo"] = Field("ppo", description="Fixed-weight composite reward with adaptive KL (§1).")
    kl_coef: float = Field(0.2, ge=0.0, description="Initial KL coefficient β_0.")
    target_kl: float | None = Field(0.5, gt=0.0, description="Per-token KL target θ_KL; None keeps β fixed.")
    kl_eta: float = Field(0.1, gt=0.0, description="KL controller step η.")
    value_coef: float = Field(0.5, ge=0.0, description="Value-loss coefficient of the single stream.")
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
        return {"kl_coef": self.kl.beta, "mean_kl": self.last_mean_kl}


class FixedWeightPPO(KLPenalisedComposite):
    """`ppo`: R = Σ_i α_i r_i with fixed weights α (rewards.*.weight)."""

    config_cls = PPOConfig

    def composite_reward(self, scores: torch.Tensor) -> torch.Tensor:
        return scores @ self.weights


# --- ppo_sat (§2) ----------------------------------------------------------------------------------


class PPOSatConfig(PPOConfig):
    name: Literal["ppo_sat"] = Field("ppo_sat", description="Target satisfaction −Σα(r − θ)² (§2).")  # type: ignore[assignment]
    uses_thresholds = True


class PPOSat(KLPenalisedComposite):
    """`ppo_sat`: R = −Σ_i α_i (r_i − θ_i)² ([000]; its code squares α_i r_i − θ_i, equal when α = 1).

    θ = rewards.*.threshold are targets; the penalty is two-sided, so `direction` is ignored.

    Variance pathology (kept on purpose, docs/ALGORITHMS.md §2): the penalty is per sample, so
    E[(r − θ)²] = (E r − θ)² + Var r. For a binary reward with θ < 0.5 the wrong outcome (0) is closer to θ
    than the right one (1): −(1 − 0.48)² = −0.2704 < −(0 − 0.48)² = −0.2304, and PPO-SAT drives the accuracy
    *down*. `build_streams` logs a warning once per reward when it sees this (all scores in {0, 1}, θ < 0.5).
    """

    config_cls = PPOSatConfig

    def __init__(self, config: Any, rewards: dict[str, "RewardConfig"]) -> None:
        super().__init__(config, rewards)
        self._warned: set[str] = set()

    def composite_reward(self, scores: torch.Tensor) -> torch.Tensor:
        return -(((scores - self.thresholds) ** 2) * self.weights).sum(dim=1)

    def build_streams(self, batch: RolloutTensors) -> Streams:
        self._warn_binary(batch.scores)
        return super().build_streams(batch)

    def _warn_binary(self, scores: torch.Tensor) -> None:
        for i, name in enumerate(self.reward_names):
            theta = float(self.thresholds[i])
            if name in self._warned or not theta < 0.5:
                continue
            column = scores[:, i]
            if bool(((column == 0) | (column == 1)).all()):
                self._warned.add(name)
                logger.warning(
                    "ppo_sat: reward '%s' looks binary and its target %.3g < 0.5, so the per-sample penalty "
                    "−(r − θ)² scores r = 0 (%.4f) above r = 1 (%.4f) and training will push this reward down "
                    "(docs/ALGORITHMS.md §2).",
                    name, theta, -(theta**2), -((1 - theta) ** 2),
                )


# --- fast_rl (§8) ----------------------------------------------------------------------------------


class FastRLConfig(ObjectiveConfig):
    name: Literal["fast_rl"] = Field("fast_rl", description="Max–min mirror-descent reward weights (§8).")
    step_size: float = Field(
        1.0,
        description="Mirror-descent step λ in w_i ∝ w_i·exp(−λ m_i) ([001] gives no value). A negative value "
        "reproduces the paper's pseudo-code sign exp(+|λ| r), i.e. mirror *ascent* (wrong; for comparison).",
    )
    smoothing: Literal["none", "ema", "clip"] = Field(
        "none", description="smooth(r̄) before the update: none = Eq. (4); ema; clip to [clip_low, clip_high]."
    )
    smoothing_rate: float = Field(0.1, gt=0.0, le=1.0, description="EMA weight ρ on the new batch mean.")
    clip_low: float = Field(0.0, description="Lower bound for smoothing='clip'.")
    clip_high: float = Field(1.0, description="Upper bound for smoothing='clip'.")
    bias: dict[str, float] = Field(
        default_factory=dict, description="Per-reward drift b_i added to the log-weight every update (default 0)."
    )
    max_weight_ratio: float | None = Field(
        10.0,
        gt=1.0,
        description="Largest w_max / w_min: log-weights are kept within ln(ratio) of the largest, so a reward "
        "that stays worst cannot take all the weight, and one that recovers regains its share in a few updates. "
        "None = Eq. (4) exactly, which drifts to one-hot on the worst reward (docs/ALGORITHMS.md §8).",
    )
    kl_coef: float = Field(0.2, ge=0.0, description="KL coefficient β ([001]: 0.2, fixed).")
    target_kl: float | None = Field(None, gt=0.0, description="Per-token KL target; None keeps β fixed.")
    kl_eta: float = Field(0.1, gt=0.0, description="KL controller step η.")
    value_coef: float = Field(0.5, ge=0.0, description="Value-loss coefficient of the single stream.")
    normalize_advantage: bool = Field(True, description="False = only centre the advantages.")

    @model_validator(mode="after")
    def _clip_order(self) -> "FastRLConfig":
        if self.clip_low > self.clip_high:
            raise ValueError(f"clip_low ({self.clip_low}) exceeds clip_high ({self.clip_high})")
        return self

    def validate_rewards(self, rewards: dict[str, "RewardConfig"]) -> None:
        super().validate_rewards(rewards)
        unknown = [k for k in self.bias if k not in rewards]
        if unknown:
            raise ValueError(f"objective fast_rl: bias names unknown reward(s) {unknown} (rewards: {list(rewards)})")


class FastRL(KLPenalisedComposite):
    """`fast_rl` ([001]): max_θ min_{w∈Δ} Σ_i w_i E[r_i] with cumulative exponentiated-gradient descent on w.

    Per batch, before the advantages (`build_streams`): r̄ = batch mean of each reward, m = smooth(r̄),
    ℓ ← ℓ − λ·m + b, w = softmax(ℓ), and this same batch gets R = Σ_i w_i r_i (w detached).
    Follows Eq. (4)/(5), not the pseudo-code's exp(+λr). Without `max_weight_ratio` w drifts toward one-hot
    on the currently worst reward; the default caps w_max / w_min at 10 (measured in docs/RESULTS.md: uncapped,
    the weights reached 0.996 on one reward in 12 iterations and stayed there).
    """

    config_cls = FastRLConfig

    def __init__(self, config: Any, rewards: dict[str, "RewardConfig"]) -> None:
        super().__init__(config, rewards)
        n = len(self.reward_names)
        self.log_weights = torch.full((n,), -math.log(n))  # ℓ, uniform start
        self.smoothed: torch.Tensor | None = None  # m, only for smoothing='ema'
        self.bias = torch.tensor([config.bias.get(name, 0.0) for name in self.reward_names])
        self.last_batch_mean = torch.full((n,), float("nan"))

    @property
    def mixture(self) -> torch.Tensor:
        """[N] current weights w = softmax(ℓ)."""
        return torch.softmax(self.log_weights, dim=0)

    def update_weights(self, scores: torch.Tensor) -> torch.Tensor:
        """One mirror-descent step from a batch. scores: [B, N] → new w [N]."""
        mean = scores.float().mean(dim=0)
        self.last_batch_mean = mean
        cfg = self.config
        if cfg.smoothing == "ema":
            self.smoothed = mean if self.smoothed is None else (1 - cfg.smoothing_rate) * self.smoothed + cfg.smoothing_rate * mean
            m = self.smoothed
        elif cfg.smoothing == "clip":
            m = mean.clamp(cfg.clip_low, cfg.clip_high)
        else:
            m = mean
        self.log_weights = self.log_weights - cfg.step_size * m + self.bias
        self.log_weights = self.log_weights - self.log_weights.max()  # softmax-invariant; keeps ℓ bounded above
        if cfg.max_weight_ratio is not None:
            self.log_weights = self.log_weights.clamp(min=-math.log(cfg.max_weight_ratio))
        return self.mixture

    def composite_reward(self, scores: torch.Tensor) -> torch.Tensor:
        return scores @ self.mixture

    def build_streams(self, batch: RolloutTensors) -> Streams:
        self.update_weights(batch.scores)  # the same batch uses the updated w (§8 step 5)
        return super().build_streams(batch)

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "log_weights": self.log_weights.clone(),
            "smoothed": None if self.smoothed is None else self.smoothed.clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.log_weights = state["log_weights"].clone().float()
        self.smoothed = None if state["smoothed"] is None else state["smoothed"].clone().float()

    def metrics(self) -> dict[str, float]:
        w = self.mixture
        out = super().metrics()
        for i, name in enumerate(self.reward_names):
            out[f"weight/{name}"] = float(w[i])
            out[f"batch_mean/{name}"] = float(self.last_batch_mean[i])
        return out
