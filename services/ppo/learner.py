"""Token-level PPO over reward streams (docs/ALGORITHMS.md §0), independent of Ray.

The models (policy, reference, optional critic, optimiser) live in `services/ppo/policy.py`. Advantages come
from `trainer.advantage`: GAE over per-stream value heads, or the critic-free group baselines GRPO/RLOO over
the K completions of each prompt (`services/ppo/group.py`). What the rewards mean and how streams are mixed
is the objective's business either way.

Minibatches are sets of token transitions. With `minibatch_unit="token"` they mix tokens of different
episodes, as RL4LMs does; each minibatch forwards only the sequences it touches and gathers the chosen
positions, which gives the same gradient as RL4LMs' per-token forward passes at a fraction of the cost.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from services.config.schema import ModelConfig, TrainerConfig
from services.objectives.base import Objective, RolloutTensors
from services.ppo.batch import SequenceBatch, collate
from services.ppo.gae import gae, reward_to_go
from services.ppo.group import group_advantages
from services.ppo.guards import require_finite_step
from services.ppo.losses import clipped_policy_loss, value_loss
from services.ppo.off_policy import BehaviourLogprobs, truncated_importance_weights
from services.ppo.policy import PolicyModels


@dataclass
class RolloutPlan:
    """Per-token quantities computed once per rollout, all [B, T] or [B, T, S]."""

    old_logprobs: torch.Tensor
    old_values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    reward_to_go: torch.Tensor
    token_weight: torch.Tensor
    importance_weight: torch.Tensor | None = None  # [B, T] decoupled-PPO correction of stale samples


class PPOLearner:
    def __init__(self, model: ModelConfig, trainer: TrainerConfig, num_streams: int, pad_id: int) -> None:
        self.cfg = trainer
        self.pad_id = pad_id
        torch.manual_seed(trainer.seed)
        # A critic only for GAE, and only over reward streams (l3m has none: it takes no advantage steps).
        self.models = PolicyModels(model, trainer, num_streams, needs_critic=trainer.advantage == "gae" and num_streams > 0)
        self.device = self.models.device
        self.policy = self.models.policy
        self.optimizer = self.models.optimizer
        self.generator = torch.Generator().manual_seed(trainer.seed)

    def _logprobs(self, batch: SequenceBatch, rows: torch.Tensor, reference: bool = False, temperature: float = 1.0) -> torch.Tensor:
        """[R, T] float32 log-probs of the response tokens of `rows`."""
        return self.models.logprobs(batch, rows, reference, temperature)

    @torch.no_grad()
    def _plan(
        self, batch: SequenceBatch, scores: torch.Tensor, objective: Objective, behaviour_rollout: BehaviourLogprobs | None,
        group_size: int, groups: torch.Tensor | None = None,
    ) -> tuple[RolloutPlan, dict[str, float]]:
        everything = torch.arange(batch.size)
        old_logprobs = self._logprobs(batch, everything).cpu()
        ref_logprobs = self._logprobs(batch, everything, reference=True).cpu()
        mask = batch.response_mask
        kl = (old_logprobs - ref_logprobs) * mask
        behaviour = None
        if objective.sample_from_reference:
            # Off-policy rollouts came from the frozen reference at a lower temperature: the PPO ratio is
            # then π_θ / β_T, so the tempered reference log-probs become the "old" log-probs.
            behaviour = self._logprobs(batch, everything, True, objective.rollout_temperature or 1.0).cpu()
        tensors = RolloutTensors(scores=scores, kl=kl, ref_logprobs=ref_logprobs, mask=mask, behaviour_logprobs=behaviour)
        streams = objective.build_streams(tensors)
        if behaviour is not None:
            old_logprobs = behaviour
        if self.cfg.advantage == "gae":
            old_values = self.models.values(batch, everything).cpu()
            gamma, lam = objective.discount(self.cfg.gamma, self.cfg.gae_lambda)
            advantages, returns = gae(streams.rewards, old_values, mask, gamma, lam)
        else:  # critic-free: no values, nothing to regress
            advantages = group_advantages(streams.rewards, mask, group_size, self.cfg.advantage, self.cfg.group_std_floor, groups)
            old_values = returns = torch.zeros_like(advantages)
        weight = mask if streams.sequence_weight is None else mask * streams.sequence_weight[:, None]
        plan = RolloutPlan(old_logprobs, old_values, advantages, returns, reward_to_go(streams.rewards, mask), weight)
        off_policy: dict[str, float] = {}
        if behaviour_rollout is not None and behaviour is None:
            # Overlapped rollout: the recomputed old log-probs are the proximal policy's (decoupled PPO);
            # the rollout's own log-probs are the behaviour policy's. (When the objective samples from the
            # reference, `behaviour` above already is the ratio's denominator and no weight is needed.)
            plan.importance_weight, off_policy = truncated_importance_weights(
                old_logprobs, behaviour_rollout.logprobs, mask, self.cfg.async_is_cap, behaviour_rollout.staleness > 0
            )
        n_tokens = mask.sum().clamp(min=1.0)
        stats = {
            "kl": float(kl.sum() / n_tokens),
            "kl_seq": float(kl.sum(dim=1).mean()),
            "response_tokens_mean": float(mask.sum(dim=1).mean()),
            **{f"stream_return/{name}": float((streams.rewards[..., j] * mask).sum(dim=1).mean())
               for j, name in enumerate(objective.stream_names)},
            **off_policy,
        }
        return plan, stats

    def _minibatches(self, mask: torch.Tensor) -> list[torch.Tensor]:
        """Index tensors [M, 2] of (sequence, position) pairs, reshuffled every call."""
        if self.cfg.minibatch_unit == "token":
            tokens = mask.nonzero()
            order = torch.randperm(tokens.shape[0], generator=self.generator)
            return list(tokens[order].split(self.cfg.minibatch_size))
        seqs = torch.randperm(mask.shape[0], generator=self.generator).split(self.cfg.minibatch_size)
        return [_tokens_of(mask, s) for s in seqs]

    # --- the update ----------------------------------------------------------------------------
    def train(
        self,
        prompt_ids: list[list[int]],
        response_ids: list[list[int]],
        scores: torch.Tensor,
        objective: Objective,
        behaviour: BehaviourLogprobs | None = None,
        group_size: int = 1,
        groups: torch.Tensor | None = None,
    ) -> dict[str, float]:
        """One PPO update on a rollout. scores: [B, N]; with a group estimator, rows come in contiguous groups
        of `group_size` completions of one prompt. Mutates `objective` (its learned state).

        behaviour: the rollout's own log-probs and staleness (overlapped rollouts); stale sequences get
        the truncated importance weight of decoupled PPO (services/ppo/off_policy.py). groups: [B] group index
        per row when rows were dropped (rewards.on_error=skip), replacing contiguous groups.
        Raises `UnsafeUpdate` before an optimiser step whose loss or gradient norm is not finite.
        """
        start = time.perf_counter()
        batch = collate(prompt_ids, response_ids, self.pad_id)
        plan, stats = self._plan(batch, scores, objective, behaviour, group_size, groups)
        coefs = objective.value_coefficients().to(self.device)
        params = self.models.trained_parameters()
        totals: dict[str, float] = {"policy_loss": 0.0, "value_loss": 0.0, "clip_fraction": 0.0, "approx_kl": 0.0, "grad_norm": 0.0}
        steps = 0
        for epoch in range(self.cfg.epochs):
            for step, index in enumerate(self._minibatches(batch.response_mask)):
                seq, pos = index[:, 0], index[:, 1]
                rows, local = torch.unique(seq, return_inverse=True)
                advantages = objective.mix_advantages(plan.advantages[seq, pos], plan.token_weight[seq, pos])
                logprobs = self._logprobs(batch, rows)[local, pos]
                p_loss, p_stats = clipped_policy_loss(
                    logprobs,
                    plan.old_logprobs[seq, pos].to(self.device),
                    advantages.to(self.device),
                    self.cfg.clip_range,
                    plan.token_weight[seq, pos].to(self.device),
                    None if plan.importance_weight is None else plan.importance_weight[seq, pos].to(self.device),
                )
                v_loss = torch.zeros((), device=self.device)
                if self.models.value is not None:
                    v_loss = value_loss(
                        self.models.values(batch, rows)[local, pos],
                        plan.returns[seq, pos].to(self.device),
                        coefs,
                        plan.old_values[seq, pos].to(self.device),
                        objective.value_clip,
                    )
                self.optimizer.zero_grad(set_to_none=True)
                (p_loss + v_loss).backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(params, self.cfg.max_grad_norm)
                require_finite_step(p_loss + v_loss, grad_norm, epoch, step)  # a NaN step would poison every weight
                self.optimizer.step()
                objective.after_minibatch(plan.reward_to_go[seq, pos])
                totals["policy_loss"] += p_loss.item()
                totals["value_loss"] += v_loss.item()
                totals["grad_norm"] += float(grad_norm)
                totals["clip_fraction"] += p_stats["clip_fraction"]
                totals["approx_kl"] += p_stats["approx_kl"]
                steps += 1
        stats.update({k: v / max(steps, 1) for k, v in totals.items()})
        stats["ppo_steps"] = steps
        stats["train_seconds"] = time.perf_counter() - start
        return stats

    # --- weights and checkpoints ---------------------------------------------------------------
    def policy_state(self, changed_only: bool = False) -> dict[str, torch.Tensor]:
        return self.models.policy_state(changed_only)

    def save(self, directory: Path, tokenizer: Any) -> None:
        self.models.save(directory, tokenizer, {"generator": self.generator.get_state(), "torch_rng": torch.get_rng_state()})

    def load(self, directory: Path) -> None:
        state = self.models.load(directory)
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])


def _tokens_of(mask: torch.Tensor, sequences: torch.Tensor) -> torch.Tensor:
    """All (sequence, position) pairs of the given sequences' response tokens."""
    sub = mask[sequences].nonzero()
    return torch.stack([sequences[sub[:, 0]], sub[:, 1]], dim=1)
