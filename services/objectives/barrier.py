"""`l3m`: relaxed log-barrier constrained fine-tuning ([004], docs/ALGORITHMS.md §10). Not PPO.

Problem: minimise L(θ) = E[length-normalised NLL of the reference response] (SFT on (context, reference))
subject to C_i(θ) = E_{y∼π_θ}[c_i(y)] ≤ 0, with c_i = b_i − r_i for `ge` rewards and r_i − b_i for `le`.
G_μ = L + (1/k) Σ_i B_{μ,μ²}(C_i); the barrier's implied multipliers are λ̂_i = μ/(k·max(−C̄_i, μ²)).

Learner call order, once per optimiser step (`update_kind == "l3m"`):

    kind = objective.next_step_kind()          # decays μ, counts the step, flips the (seeded) coin
    if kind == "task":
        # SFT minibatch of (prompt, reference response); token log-probs under π_θ, with grad
        loss = objective.task_loss(token_logprobs [B, T], mask [B, T])
    else:  # "constraint"
        # sample y ∼ π_θ for a batch of prompts (the run's rollout.sampling; the paper's top-p 0.9 is rollout.sampling.top_p=0.9), score them with the
        # reward actors → scores [B, N] (config reward order); ℓ̄_j = masked mean of token log-probs of y_j
        # under π_θ, with grad → seq_mean_logprob [B]
        loss = objective.constraint_loss(seq_mean_logprob, scores)   # updates C̄ (EMA), λ̂ detached
    loss.backward(); clip_grad_norm_(policy, objective.config.max_grad_norm); optimizer.step()
    # (task and constraint gradients are clipped separately because they are separate steps)

There is no KL term, critic or advantage (the learner measures the samples' KL to the reference for the
record only). `set_total_steps(n)` (the run's number of
optimiser steps of either kind) must be called before the first step unless `total_steps` is configured;
μ follows μ_0·(μ_T/μ_0)^{min(step, T)/T}, i.e. μ ← γ_μ·μ each step and then stays at μ_T.

Spec choices ([004] has no code; docs/ALGORITHMS.md §10, departures): EMA weight 0.1 is on the new batch, the first
batch sets C̄; μ decays on every step of either kind; no baseline in the constraint gradient; λ̂ detached.
C̄ is stored as an EMA of the batch-mean *scores* (C is linear in r), so a threshold changed mid-run takes
effect at once.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from pydantic import Field, model_validator

from services.objectives.base import Objective, RolloutTensors, Streams, direction_signs, require_directions
from services.objectives.options import ObjectiveConfig

if TYPE_CHECKING:
    from services.rewards.config import RewardConfig


def barrier(z: torch.Tensor, mu: float) -> torch.Tensor:
    """Relaxed log barrier B_{μ,s}(z), s = μ²: −μ log(−z) for z ≤ −s, else μz/s + μ − μ log s."""
    s = mu * mu
    inside = -mu * torch.log(torch.clamp(-z, min=s))
    linear = mu * z / s + mu - mu * math.log(s)
    return torch.where(z <= -s, inside, linear)


def barrier_grad(z: torch.Tensor, mu: float) -> torch.Tensor:
    """B'_{μ,μ²}(z) = μ / max(−z, μ²)."""
    return mu / torch.clamp(-z, min=mu * mu)


class L3MConfig(ObjectiveConfig):
    frozen_after_start: ClassVar[dict[str, str]] = {
        "seed": "only seeds the task/constraint coin, whose state already exists",
    }
    name: Literal["l3m"] = Field("l3m", description="Relaxed log-barrier SFT under reward constraints (§10).")
    uses_thresholds = True
    constraint_direction = "ge"  # le also accepted

    mu_start: float = Field(1.0, gt=0.0, description="Barrier parameter μ_0.")
    mu_end: float = Field(1e-6, gt=0.0, description="Final barrier parameter μ_T.")
    total_steps: int | None = Field(
        None, gt=0, description="T: optimiser steps (task + constraint) over which μ decays; None = set by the driver."
    )
    ema: float = Field(0.1, gt=0.0, le=1.0, description="EMA weight on the new batch's constraint estimate.")
    task_probability: float = Field(0.5, ge=0.0, le=1.0, description="Probability of a task (SFT) step; 0.5 = fair coin.")
    max_grad_norm: float = Field(1.0, gt=0.0, description="Gradient-norm clip, applied to each step separately.")
    seed: int = Field(0, description="Seed of the task/constraint coin.")

    @model_validator(mode="after")
    def _decays(self) -> "L3MConfig":
        if self.mu_end > self.mu_start:
            raise ValueError(f"mu_end ({self.mu_end}) exceeds mu_start ({self.mu_start})")
        return self

    def complete(self, run: Any) -> None:
        """total_steps defaults to the run's optimiser steps: iterations × epochs × ⌈samples / minibatch⌉, where a
        rollout holds batch_size × samples_per_prompt samples (what `l3m_iteration` steps over)."""
        if self.total_steps is None:
            samples = run.rollout.batch_size * run.rollout.samples_per_prompt
            per_iteration = run.trainer.epochs * math.ceil(samples / run.trainer.minibatch_size)
            self.total_steps = run.trainer.iterations * per_iteration

    def validate_rewards(self, rewards: dict[str, "RewardConfig"]) -> None:
        super().validate_rewards(rewards)
        require_directions("l3m", rewards, ("ge", "le"), "the log barrier needs inequality constraints")


class L3M(Objective):
    """State: step counter (→ μ), EMA of the batch-mean scores (→ C̄), the coin's generator."""

    config_cls = L3MConfig
    update_kind = "l3m"

    def __init__(self, config: Any, rewards: dict[str, "RewardConfig"]) -> None:
        super().__init__(config, rewards)
        self.k = len(self.reward_names)
        self.signs = direction_signs(self.directions)  # c = sign·(b − r)
        self.total_steps: int | None = config.total_steps
        self.step = 0
        self.score_ema = torch.full((self.k,), float("nan"))  # NaN until the first constraint step
        self.generator = torch.Generator().manual_seed(config.seed)
        self.last_kind: str | None = None

    # --- schedule ------------------------------------------------------------------------------
    def set_total_steps(self, total_steps: int) -> None:
        if total_steps <= 0:
            raise ValueError(f"l3m: total_steps must be positive, got {total_steps}")
        self.total_steps = int(total_steps)

    @property
    def decay(self) -> float:
        """γ_μ = (μ_T/μ_0)^{1/T}."""
        if self.total_steps is None:
            raise ValueError("l3m: total_steps is unset (objective.total_steps=N, or call set_total_steps)")
        return (self.config.mu_end / self.config.mu_start) ** (1.0 / self.total_steps)

    @property
    def mu(self) -> float:
        if self.step == 0:
            return self.config.mu_start
        return self.config.mu_start * self.decay ** min(self.step, self.total_steps)  # type: ignore[type-var]

    def next_step_kind(self) -> Literal["task", "constraint"]:
        """Start one optimiser step: μ ← γ_μ·μ, then a (seeded) coin flip."""
        _ = self.decay  # fail early if T is unset
        self.step += 1
        coin = float(torch.rand((), generator=self.generator))
        self.last_kind = "task" if coin < self.config.task_probability else "constraint"
        return self.last_kind  # type: ignore[return-value]

    # --- losses --------------------------------------------------------------------------------
    def task_loss(self, token_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean over sequences of −(1/|y|) Σ_t log π(y_t|·). token_logprobs, mask: [B, T] → scalar."""
        per_seq = (token_logprobs * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        return -per_seq.mean()

    def constraint_values(self, scores: torch.Tensor) -> torch.Tensor:
        """c_ij = sign_i·(b_i − r_ij). scores: [B, N] → [B, N]."""
        return self.signs * (self.thresholds - scores.float())

    def constraint_estimate(self) -> torch.Tensor:
        """C̄ [N] from the score EMA and the current thresholds (NaN before the first constraint step)."""
        return self.signs * (self.thresholds - self.score_ema)

    def multipliers(self) -> torch.Tensor:
        """λ̂_i = μ/(k·max(−C̄_i, μ²)) [N] (0 before the first constraint step)."""
        c_bar = self.constraint_estimate()
        lam = barrier_grad(c_bar, self.mu) / self.k
        return torch.nan_to_num(lam, nan=0.0)

    def observe(self, scores: torch.Tensor) -> torch.Tensor:
        """Fold a batch's scores [B, N] into the EMA and return the detached λ̂ [N]."""
        batch_mean = scores.detach().float().mean(dim=0)
        if bool(torch.isnan(self.score_ema).any()):
            self.score_ema = batch_mean
        else:
            self.score_ema = (1 - self.config.ema) * self.score_ema + self.config.ema * batch_mean
        return self.multipliers()

    def constraint_loss(self, seq_mean_logprob: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """Surrogate Σ_i λ̂_i·mean_j[c_ij·ℓ̄_j]; its gradient is (1/k) Σ_i B'(C̄_i)·∇C_i (REINFORCE, no baseline).

        seq_mean_logprob: [B] ℓ̄_j with grad; scores: [B, N] → scalar.
        """
        lam = self.observe(scores)
        costs = self.constraint_values(scores).to(seq_mean_logprob.dtype)
        return (lam.to(seq_mean_logprob.dtype) * (costs * seq_mean_logprob[:, None]).mean(dim=0)).sum()

    # --- PPO interface: not applicable ---------------------------------------------------------
    @property
    def stream_names(self) -> list[str]:
        return []

    def value_coefficients(self) -> torch.Tensor:
        return torch.zeros(0)

    def build_streams(self, batch: RolloutTensors) -> Streams:
        raise NotImplementedError("l3m is not PPO (update_kind='l3m'); see services/objectives/barrier.py")

    def mix_advantages(self, advantages: torch.Tensor, token_weight: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError("l3m is not PPO (update_kind='l3m'); see services/objectives/barrier.py")

    # --- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "step": self.step,
            "total_steps": self.total_steps,
            "score_ema": self.score_ema.clone(),
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.step = int(state["step"])
        self.total_steps = state["total_steps"]
        self.score_ema = state["score_ema"].clone().float()
        self.generator.set_state(state["generator"])

    def metrics(self) -> dict[str, float]:
        out = {"mu": self.mu, "step": float(self.step)}
        c_bar, lam = self.constraint_estimate(), self.multipliers()
        for i, name in enumerate(self.reward_names):
            out[f"constraint/{name}"] = float(c_bar[i])
            out[f"multiplier/{name}"] = float(lam[i])
        return out
