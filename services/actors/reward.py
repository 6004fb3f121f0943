"""RewardActor: hosts one or more reward functions; several actors score one batch in parallel."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import ray

from services.actors.common import quiet_process
from services.rewards.config import RewardConfig
from services.rewards.base import ScoringBatch

if TYPE_CHECKING:
    from services.actors.rollout import RolloutShard


def scoring_batch(shards: tuple["RolloutShard", ...]) -> ScoringBatch:
    examples = [e for s in shards for e in s.examples]
    return ScoringBatch(
        contexts=[list(e.context) for e in examples],
        responses=[t for s in shards for t in s.generation.texts],
        references=[e.reference for e in examples],
        labels=[e.label for e in examples],
    )


@ray.remote
class RewardActor:
    def __init__(self, rewards: dict[str, RewardConfig]) -> None:
        quiet_process()
        from services.rewards.registry import build_reward

        self.functions = {name: build_reward(r.kind, r.params) for name, r in rewards.items()}

    def names(self) -> list[str]:
        return list(self.functions)

    def score(self, *shards: "RolloutShard") -> dict[str, object]:
        """Scores every response of the iteration (shards in rollout-actor order) with each hosted reward."""
        start = time.perf_counter()
        batch = scoring_batch(shards)
        scores: dict[str, list[float]] = {}
        for name, fn in self.functions.items():
            try:
                scores[name] = fn.score(batch)
            except ValueError as err:  # RewardError and friends: name the reward, keep the message
                raise ValueError(f"reward '{name}': {err}") from None
        return {"scores": scores, "seconds": time.perf_counter() - start}
