"""`reward_dropout` ([002], docs/ALGORITHMS.md §9): drop low bi-objective-reward sequences from the update.

Per rollout (`build_streams`): r̂(τ) = R(τ) + λ_β·ln β(τ), where R = Σ_i α_i r_i (rewards.*.weight) and
ln β(τ) = Σ_t log π_0(a_t|s_t) from `ref_logprobs` (the mean instead of the sum with `length_normalize`).
A per-batch rule keeps a subset:

- `threshold`: keep r̂ > δ;  `quantile`: keep r̂ ≥ Q_γ(batch) (linear interpolation, ties kept);
- `random`: keep with probability 1 − γ (the control).

Stream (one), by `reward_form`:
- `eq7` (default): ℜ = r̂ − ln π_θ, as PPO: per-token −kl_coef·k_t plus terminal R (= r̂ − ln β).
- `algorithm1`: terminal r̂ only, no KL term.

`mode="mask"` (default): dropped sequences get `Streams.sequence_weight` 0, so they are left out of the
policy loss and of the advantage statistics (`mix_advantages` gets the weight) but still train the critic.
`mode="zero_reward"`: the text literally — dropped sequences get r̂_δ = 0 (for eq7 the terminal becomes
0 − ln β) and keep weight 1.

Off-policy variant (`behaviour_sampling=True`): the driver must sample the rollout from the *frozen
reference weights* at `rollout_temperature` (= behaviour_temperature, 0.4), pass that sampler's token
log-probs (log β_T) as `RolloutTensors.behaviour_logprobs`, and use them as the old log-probs of the PPO
ratio, which then is the per-token importance weight π_θ/β_T bounded by the ε-clip. `kl`/`ref_logprobs`
keep their usual meaning (policy at rollout time vs untempered reference). With
`sequence_importance_weight=True` each sequence's policy-loss weight is also multiplied by the detached,
truncated w(τ) = min(exp Σ_t(log π_θ − log β_T), iw_clip).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from pydantic import Field

from services.objectives.base import Objective, RolloutTensors, Streams, normalize_streams, terminal_reward
from services.objectives.options import ObjectiveConfig

if TYPE_CHECKING:
    from services.rewards.config import RewardConfig

logger = logging.getLogger(__name__)


class RewardDropoutConfig(ObjectiveConfig):
    frozen_after_start: ClassVar[dict[str, str]] = {
        "seed": "only seeds the random rule, whose generator state already exists",
        "behaviour_sampling": "changes what the rollout actors sample from, fixed when they start; start a new run",
        "behaviour_temperature": "is read by the rollout actors when they start; start a new run",
    }
    name: Literal["reward_dropout"] = Field("reward_dropout", description="Reward dropout on r̂ = R + ln β (§9).")
    rule: Literal["threshold", "quantile", "random"] = Field("quantile", description="Which sequences to keep.")
    quantile: float = Field(
        0.8, ge=0.0, lt=1.0, description="γ: quantile level (rule=quantile) or drop probability (rule=random)."
    )
    delta: float = Field(0.0, ge=0.0, description="δ for rule=threshold: keep r̂ > δ.")
    mode: Literal["mask", "zero_reward"] = Field(
        "mask", description="mask: zero policy-loss weight for dropped sequences; zero_reward: set their r̂ to 0."
    )
    reward_form: Literal["eq7", "algorithm1"] = Field(
        "eq7", description="eq7: ℜ = r̂ − ln π_θ (KL-penalised stream); algorithm1: r̂_δ only."
    )
    length_normalize: bool = Field(
        False, description="ln β(τ) = mean instead of sum of token log-probs (a raw sum makes a fixed δ meaningless)."
    )
    likelihood_weight: float = Field(1.0, description="λ_β in r̂ = R + λ_β·ln β(τ) ([002]: 1).")
    kl_coef: float = Field(1.0, ge=0.0, description="Per-token KL weight of the eq7 stream (1 = exactly r̂ − ln π_θ).")
    behaviour_sampling: bool = Field(False, description="Off-policy: sample from the frozen reference at behaviour_temperature.")
    behaviour_temperature: float = Field(0.4, gt=0.0, description="Sampling temperature of the behaviour model.")
    sequence_importance_weight: bool = Field(
        False, description="Off-policy only: also weight each sequence by min(π_θ(τ)/β_T(τ), iw_clip)."
    )
    iw_clip: float = Field(1.0, gt=0.0, description="Truncation of the sequence importance weight ('norm clipping 1.0').")
    normalize_advantage: bool = Field(True, description="False = only centre the advantages.")
    center_advantage: bool = Field(
        True, description="False (with normalize_advantage=False) = raw advantages, REINFORCE without a baseline."
    )
    value_coef: float = Field(0.5, ge=0.0, description="Value-loss coefficient of the single stream.")
    seed: int = Field(0, description="Seed of the random rule.")


def dropout_mask(
    rhat: torch.Tensor, rule: str, gamma: float, delta: float, generator: torch.Generator
) -> tuple[torch.Tensor, float]:
    """rhat: [B] → ([B] bool keep-mask, cutoff: δ, Q_γ, or NaN for the random rule)."""
    if rule == "threshold":
        return rhat > delta, delta
    if rule == "quantile":  # ≥ keeps ties: with > the update dies once the policy concentrates
        q = torch.quantile(rhat.double(), gamma)  # numpy's default linear interpolation
        return rhat.double() >= q, float(q)
    return torch.rand(rhat.shape, generator=generator) >= gamma, float("nan")


def truncated_importance_weight(log_ratio: torch.Tensor, clip: float = 1.0) -> torch.Tensor:
    """log_ratio: [B] Σ_t log π_θ − log β_T per sequence → min(exp(log_ratio), clip), computed in log-space."""
    return torch.exp(torch.clamp(log_ratio, max=torch.log(torch.tensor(clip)).item()))


class RewardDropout(Objective):
    config_cls = RewardDropoutConfig

    def __init__(self, config: Any, rewards: dict[str, "RewardConfig"]) -> None:
        super().__init__(config, rewards)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.sample_from_reference = bool(config.behaviour_sampling)
        self.rollout_temperature = config.behaviour_temperature if config.behaviour_sampling else None
        self._stats: dict[str, float] = {}

    @property
    def stream_names(self) -> list[str]:
        return ["composite"]

    def value_coefficients(self) -> torch.Tensor:
        return torch.tensor([self.config.value_coef])

    def log_likelihood(self, ref_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """ln β(τ): [B, T] token log-probs → [B] sum (or mean with length_normalize)."""
        total = (ref_logprobs * mask).sum(dim=1)
        return total / mask.sum(dim=1).clamp(min=1.0) if self.config.length_normalize else total

    def bi_objective(self, batch: RolloutTensors) -> tuple[torch.Tensor, torch.Tensor]:
        """(R [B], r̂ [B])."""
        composite = batch.scores.float() @ self.weights
        return composite, composite + self.config.likelihood_weight * self.log_likelihood(batch.ref_logprobs, batch.mask)

    def build_streams(self, batch: RolloutTensors) -> Streams:
        cfg = self.config
        composite, rhat = self.bi_objective(batch)
        keep, cutoff = dropout_mask(rhat, cfg.rule, cfg.quantile, cfg.delta, self.generator)
        keepf = keep.float()
        # Terminal value: eq7 → R (kept) or −λ_β ln β (zeroed r̂); algorithm1 → r̂_δ.
        if cfg.reward_form == "algorithm1":
            terminal = rhat if cfg.mode == "mask" else rhat * keepf
            per_token = terminal_reward(terminal, batch.mask)
        else:
            terminal = composite if cfg.mode == "mask" else torch.where(keep, composite, composite - rhat)
            per_token = terminal_reward(terminal, batch.mask) - cfg.kl_coef * batch.kl * batch.mask
        weight = keepf if cfg.mode == "mask" else torch.ones_like(keepf)
        if cfg.sequence_importance_weight and cfg.behaviour_sampling:
            if batch.behaviour_logprobs is None:
                raise ValueError("reward_dropout: sequence_importance_weight needs RolloutTensors.behaviour_logprobs")
            policy_logprobs = batch.kl + batch.ref_logprobs
            log_ratio = ((policy_logprobs - batch.behaviour_logprobs) * batch.mask).sum(dim=1)
            weight = weight * truncated_importance_weight(log_ratio, cfg.iw_clip)
        self._record(rhat, keep, cutoff)
        return Streams(rewards=per_token.unsqueeze(-1), sequence_weight=weight)

    def _record(self, rhat: torch.Tensor, keep: torch.Tensor, cutoff: float) -> None:
        kept = rhat[keep]
        self._stats = {
            "dropout/kept_fraction": float(keep.float().mean()),
            "dropout/cutoff": cutoff,
            "dropout/rhat_mean": float(rhat.mean()),
            "dropout/kept_rhat_mean": float(kept.mean()) if kept.numel() else float("nan"),
            # Theorem 4.2 assumes r̂ > 0; with summed log-likelihoods the kept r̂ is usually negative.
            "dropout/kept_rhat_positive_fraction": float((kept > 0).float().mean()) if kept.numel() else float("nan"),
        }
        if kept.numel() and bool((kept <= 0).all()):
            logger.debug("reward_dropout: every kept r̂ is ≤ 0 (mean %.3g)", float(kept.mean()))

    def mix_advantages(self, advantages: torch.Tensor, token_weight: torch.Tensor | None = None) -> torch.Tensor:
        weight = token_weight if self.config.mode == "mask" else None
        return normalize_streams(
            advantages, scale=self.config.normalize_advantage, weight=weight, center=self.config.center_advantage
        )[:, 0]

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.generator.set_state(state["generator"])

    def metrics(self) -> dict[str, float]:
        return dict(self._stats)
