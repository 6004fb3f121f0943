"""LearnerActor: a thin Ray shell around `services.ppo.iteration.LearnerLoop` (the iteration, Ray-free) and
`services.ppo.learner.PPOLearner` (the model, optimiser and PPO update).

It is also rank 0 of the NCCL weight sync on GPU clusters (`NcclWeightSenderMixin`, used by
`services.rollout.weight_sync.NcclWeightSync`); on CPU the driver's object-store sync calls `policy_state`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import ray
import torch

from services.actors.common import ActorStateLost, quiet_process
from services.config.schema import RootConfig
from services.objectives.spec import Handout
from services.rollout.weight_sync import NcclWeightSenderMixin


@ray.remote
class LearnerActor(NcclWeightSenderMixin):
    def __init__(self, config: RootConfig) -> None:
        quiet_process(config.learner.torch_threads)
        from services.models.loading import load_tokenizer
        from services.ppo.iteration import LearnerLoop
        from services.ppo.learner import PPOLearner

        self.config = config
        self.tokenizer = load_tokenizer(config.model.name_or_path)
        self.learner = PPOLearner(config.model, config.trainer, LearnerLoop.num_streams(config), self.tokenizer.pad_token_id)
        self.loop = LearnerLoop(config, self.learner, self.tokenizer)
        self.version = 0

    def train(self, iteration: int, handout: Handout, evaluation: dict[str, float] | None, num_shards: int, *parts: Any) -> dict[str, Any]:
        """parts = the rollout shards (in order) followed by each reward actor's result; `evaluation` = the
        held-out evaluation of the current policy when one ran just before this update.

        Returns the objective's new state, the iteration's metrics record and the spec version it trained with.
        """
        from services.ppo.iteration import Rollout

        if self.version != iteration:  # every update counts one version: iteration k trains the state after k updates
            raise ActorStateLost(f"the learner holds the state after {self.version} updates, iteration {iteration} needs "
                                 f"{iteration}: it was restarted")
        shards, reward_results = parts[:num_shards], parts[num_shards:]
        scores_by_name: dict[str, list[float]] = {}
        for result in reward_results:
            scores_by_name.update(result["scores"])
        rollout = Rollout(
            prompt_ids=[p for s in shards for p in s.generation.prompt_ids],
            response_ids=[r for s in shards for r in s.generation.response_ids],
            scores=torch.tensor([scores_by_name[n] for n in self.config.rewards], dtype=torch.float32).T,  # [B, N]
            references=[e.reference for s in shards for e in s.examples],
            tokens=sum(s.generation.num_tokens for s in shards),
            rollout_seconds=max(s.generation.seconds for s in shards),
            reward_seconds=max(r["seconds"] for r in reward_results),
            # Updates between the weights that sampled this batch and the ones it trains: 0 when the weight sync
            # ran before the rollout (synchronous runs), 1 for a batch generated during the previous update.
            staleness=max(self.version - s.weights_version for s in shards),
            behaviour=self._behaviour(shards),
            group_size=self.config.rollout.samples_per_prompt,  # the driver keeps each prompt's group in one shard
        )
        result = self.loop.train(iteration, handout, rollout, evaluation)
        self.version += 1
        return result

    def _behaviour(self, shards: tuple[Any, ...]) -> Any:
        """The rollout's own log-probs and per-sequence staleness, for the off-policy correction of
        overlapped rollouts (trainer.async_rollout); None when the run does not overlap."""
        if not self.config.trainer.async_rollout:
            return None
        from services.ppo.off_policy import BehaviourLogprobs, pad_logprobs

        rows = [lp for s in shards for lp in s.generation.logprobs]
        staleness = [self.version - s.weights_version for s in shards for _ in s.generation.logprobs]
        width = max(len(r) for s in shards for r in s.generation.response_ids)
        return BehaviourLogprobs(pad_logprobs(rows, width), torch.tensor(staleness))

    def policy_state(self, changed_only: bool = False) -> dict[str, torch.Tensor]:
        return self.learner.policy_state(changed_only)

    def weights_version(self) -> int:
        return self.version

    def pid(self) -> int:
        return os.getpid()

    def save(self, directory: str) -> None:
        self.learner.save(Path(directory), self.tokenizer)

    def export(self, directory: str) -> None:
        """The trained policy as a standalone Hugging Face model (checkpoint.export_dtype)."""
        dtype = {"bfloat16": torch.bfloat16, "float32": torch.float32, "engines": None}[self.config.checkpoint.export_dtype]
        self.learner.models.export(Path(directory), self.tokenizer, dtype)

    def load(self, directory: str, version: int) -> None:
        self.learner.load(Path(directory))
        self.version = version
