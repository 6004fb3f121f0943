"""The `l3m` update (docs/ALGORITHMS.md §10): alternating SFT and log-barrier constraint steps, no critic.

One iteration has one rollout: B prompts, a response sampled from π_θ for each (the constraint samples,
scored by the reward actors) and each prompt's reference response (the SFT data). The learner then takes
`epochs × ⌈B / minibatch_size⌉` optimiser steps; each flips the objective's coin and uses the next
minibatch of sequences either as SFT pairs (task step) or as scored samples (constraint step). Constraint
samples are therefore on-policy at the start of the iteration and slightly stale after its first steps —
the same trade-off PPO makes, without its ratio correction (the barrier gradient has none in [004]).
Task and constraint gradients are clipped separately because they are separate steps.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

import torch

from services.ppo.batch import collate

if TYPE_CHECKING:
    from services.objectives.barrier import L3M
    from services.ppo.learner import PPOLearner


def steps_per_iteration(batch_size: int, minibatch_size: int, epochs: int) -> int:
    """Must match `L3MConfig.complete`, which sizes the μ schedule from it."""
    return epochs * math.ceil(batch_size / minibatch_size)


def l3m_iteration(
    learner: "PPOLearner",
    prompt_ids: list[list[int]],
    response_ids: list[list[int]],
    reference_ids: list[list[int]],
    scores: torch.Tensor,
    objective: "L3M",
) -> dict[str, float]:
    """scores: [B, N] of the sampled responses. Mutates the policy, optimizer and objective state."""
    start = time.perf_counter()
    cfg = learner.cfg
    samples = collate(prompt_ids, response_ids, learner.pad_id)
    sft = collate(prompt_ids, reference_ids, learner.pad_id)
    kl = _sample_kl(learner, samples)
    params = learner.models.trained_parameters()
    order = torch.randperm(samples.size, generator=learner.generator)
    chunks = list(order.split(cfg.minibatch_size))
    totals = {"task_loss": 0.0, "constraint_loss": 0.0, "task_steps": 0, "constraint_steps": 0}
    for step in range(steps_per_iteration(samples.size, cfg.minibatch_size, cfg.epochs)):
        rows = chunks[step % len(chunks)]
        kind = objective.next_step_kind()
        if kind == "task":
            logprobs = learner._logprobs(sft, rows)
            loss = objective.task_loss(logprobs, sft.response_mask[rows].to(learner.device))
        else:
            mask = samples.response_mask[rows].to(learner.device)
            logprobs = learner._logprobs(samples, rows)
            seq_mean = (logprobs * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
            loss = objective.constraint_loss(seq_mean, scores[rows].to(learner.device))
        learner.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, objective.config.max_grad_norm)
        learner.optimizer.step()
        totals[f"{kind}_loss"] += loss.item()
        totals[f"{kind}_steps"] += 1
    stats = {
        "kl": kl,
        "task_loss": totals["task_loss"] / max(totals["task_steps"], 1),
        "constraint_loss": totals["constraint_loss"] / max(totals["constraint_steps"], 1),
        "task_steps": float(totals["task_steps"]),
        "constraint_steps": float(totals["constraint_steps"]),
        "response_tokens_mean": float(samples.response_mask.sum(dim=1).mean()),
        "train_seconds": time.perf_counter() - start,
    }
    return stats


@torch.no_grad()
def _sample_kl(learner: "PPOLearner", samples) -> float:
    """Per-token KL(π_θ ‖ π_ref) of the iteration's samples before its steps (the k1 estimate PPO records).

    L3M has no KL term, but it is the one measure of how far the policy moved that every objective shares, so
    the progress line, the summary and report.png show it for l3m too (two no-grad forward passes)."""
    everything = torch.arange(samples.size)
    mask = samples.response_mask
    policy = learner._logprobs(samples, everything).cpu()
    reference = learner._logprobs(samples, everything, reference=True).cpu()
    return float(((policy - reference) * mask).sum() / mask.sum().clamp(min=1.0))
