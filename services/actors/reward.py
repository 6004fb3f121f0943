"""RewardActor: hosts one or more reward functions; several actors score one batch in parallel."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

import ray

from services.actors.common import quiet_process
from services.rewards.config import RewardConfig
from services.rewards.base import ScoringBatch, score_samples

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
    def __init__(self, rewards: dict[str, RewardConfig], on_error: str = "fail") -> None:
        quiet_process()
        from services.rewards.registry import build_reward

        self.functions = {name: build_reward(r.kind, r.params) for name, r in rewards.items()}
        self.on_error = on_error  # fault.reward_on_error (rewards.on_error)

    def pid(self) -> int:
        """This actor's process id (fault-injection tests and <run dir>/actors.json)."""
        return os.getpid()

    def names(self) -> list[str]:
        return list(self.functions)

    def score(self, *shards: "RolloutShard", iteration: int | None = None) -> dict[str, object]:
        """Scores every response of the iteration (shards in rollout-actor order) with each hosted reward.

        Idempotent (no state changes), so Ray may retry it on a restarted actor. A sample a reward cannot
        score is an error naming it, or NaN with rewards.on_error=skip (services/rewards/base.py)."""
        start = time.perf_counter()
        batch = scoring_batch(shards)
        scores = {name: score_samples(fn, name, batch, self.on_error, iteration) for name, fn in self.functions.items()}
        return {"scores": scores, "seconds": time.perf_counter() - start}
