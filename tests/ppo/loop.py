"""The real learner without Ray: a `LearnerLoop` over a real `PPOLearner` on the tiny model, and a fixed
synthetic rollout, so twin runs see identical inputs and differ only by what the coordinator hands out."""

from __future__ import annotations

import torch

from services.config.schema import RootConfig
from services.models.loading import load_tokenizer
from services.ppo.iteration import LearnerLoop, Rollout
from services.ppo.learner import PPOLearner


def make_loop(config: RootConfig) -> LearnerLoop:
    tokenizer = load_tokenizer(config.model.name_or_path)
    learner = PPOLearner(config.model, config.trainer, LearnerLoop.num_streams(config), tokenizer.pad_token_id)
    return LearnerLoop(config, learner, tokenizer)


def fixed_rollout(config: RootConfig, iteration: int, batch: int = 8) -> Rollout:
    """Rollout k of a run: the same tokens and scores for every run with this config and k."""
    g = torch.Generator().manual_seed(1000 + iteration)
    k = config.rollout.samples_per_prompt  # K completions of each prompt, in contiguous groups
    prompts = [p for p in (torch.randint(5, 400, (6,), generator=g).tolist() for _ in range(batch // k)) for _ in range(k)]
    responses = [torch.randint(5, 400, (3 + i % 4,), generator=g).tolist() for i in range(batch)]
    scores = torch.rand(batch, len(config.rewards), generator=g)
    return Rollout(prompts, responses, scores, ["a short reference reply"] * batch, tokens=sum(map(len, responses)),
                   rollout_seconds=1.0, reward_seconds=0.1, group_size=k)
