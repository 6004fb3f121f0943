"""LearnerActor: a thin Ray wrapper around `services.ppo.learner.PPOLearner`.

It is also rank 0 of the NCCL weight sync on GPU clusters (`NcclWeightSenderMixin`, used by
`services.rollout.weight_sync.NcclWeightSync`); on CPU the driver's object-store sync calls `policy_state`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ray
import torch

from services.actors.common import quiet_process
from services.config import RootConfig
from services.objectives.constraints import violation
from services.rollout.weight_sync import NcclWeightSenderMixin


@ray.remote
class LearnerActor(NcclWeightSenderMixin):
    def __init__(self, config: RootConfig) -> None:
        quiet_process(config.learner.torch_threads)
        from services.models import load_tokenizer
        from services.objectives.registry import build_objective
        from services.ppo.learner import PPOLearner

        self.config = config
        self.objective = build_objective(config.objective, config.rewards)
        self.tokenizer = load_tokenizer(config.model.name_or_path)
        self.learner = PPOLearner(
            config.model, config.trainer, len(self.objective.stream_names), self.tokenizer.pad_token_id
        )
        self.version = 0

    def train(
        self,
        iteration: int,
        objective_state: dict[str, Any],
        evaluation: dict[str, float] | None,
        num_shards: int,
        *parts: Any,
    ) -> dict[str, Any]:
        """parts = the rollout shards (in order) followed by each reward actor's result; `evaluation` =
        the held-out evaluation of the current policy when one ran just before this update.

        Returns the objective's new state and the iteration's metrics record.
        """
        shards, reward_results = parts[:num_shards], parts[num_shards:]
        scores_by_name: dict[str, list[float]] = {}
        for result in reward_results:
            scores_by_name.update(result["scores"])
        names = list(self.config.rewards)
        scores = torch.tensor([scores_by_name[n] for n in names], dtype=torch.float32).T  # [B, N]
        self.objective.load_state_dict(objective_state)
        if evaluation is not None:  # e.g. nm_ppo moves its thresholds on an evaluation
            self.objective.observe_evaluation(iteration, evaluation)
        prompts = [p for s in shards for p in s.generation.prompt_ids]
        responses = [r for s in shards for r in s.generation.response_ids]
        if self.objective.update_kind == "l3m":
            from services.ppo.l3m import l3m_iteration

            references = self._reference_ids([e.reference for s in shards for e in s.examples])
            stats = l3m_iteration(self.learner, prompts, responses, references, scores, self.objective)
        else:
            stats = self.learner.train(prompts, responses, scores, self.objective, self._behaviour(shards))
        self.version += 1

        rollout_seconds = max(s.generation.seconds for s in shards)
        tokens = sum(s.generation.num_tokens for s in shards)
        record: dict[str, Any] = {
            "iteration": iteration,
            "tokens": tokens,
            "tokens_per_second": tokens / max(rollout_seconds, 1e-9),
            "time/rollout": rollout_seconds,
            "time/reward": max(r["seconds"] for r in reward_results),
            "time/train": stats.pop("train_seconds"),
        }
        for j, name in enumerate(names):
            mean = float(scores[:, j].mean())
            threshold = float(self.objective.thresholds[j])
            record[f"reward/{name}"] = mean
            if threshold == threshold:  # not NaN
                record[f"threshold/{name}"] = threshold
                record[f"violation/{name}"] = violation(mean, threshold, self.objective.directions[j])
        # Updates between the weights that sampled this batch and the ones it trained: 0 when the weight
        # sync ran before the rollout (synchronous runs), 1 for a batch generated during the previous update.
        record["async/staleness"] = max(self.version - 1 - s.weights_version for s in shards)
        record.update(stats)
        record.update(self.objective.metrics())
        return {"objective_state": self.objective.state_dict(), "record": record}

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

    def _reference_ids(self, references: list[str | None]) -> list[list[int]]:
        """Reference responses as SFT targets, ending with EOS like a finished generation."""
        out = []
        for row, text in enumerate(references):
            if not text:
                raise ValueError(f"objective l3m trains on reference responses; row {row} has none")
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            out.append(ids[: self.config.model.max_prompt_tokens] + [self.tokenizer.eos_token_id])
        return out

    def policy_state(self) -> dict[str, torch.Tensor]:
        return self.learner.policy_state()

    def weights_version(self) -> int:
        return self.version

    def save(self, directory: str) -> None:
        self.learner.save(Path(directory), self.tokenizer)

    def load(self, directory: str, version: int) -> None:
        self.learner.load(Path(directory))
        self.version = version
