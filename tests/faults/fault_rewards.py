"""A real reward kind for fault tests, registered in services/rewards/registry.py's table by `register()`.

`register()` must run in every process that validates a config or builds rewards: the test's driver
process (tests/faults/runner.py calls it) and every Ray worker (the runner passes it to ray.init as
`worker_process_setup_hook`)."""

from __future__ import annotations

import math

from services.rewards import registry
from services.rewards.base import RewardFunction, RewardParams, ScoringBatch


class NaNAtParams(RewardParams):
    samples: list[int] = []  # 1-based positions within each scored batch that get `value`
    value: float = math.nan


class NaNAtReward(RewardFunction):
    """len(response) / 10, except NaN (or `value`, e.g. inf) at the chosen samples of every batch.
    (Raising rewards are covered by tests/faults/test_bad_scores.py without Ray.)"""

    kind = "nan_at"
    Params = NaNAtParams

    def _score(self, batch: ScoringBatch) -> list[float]:
        return [self.params.value if i + 1 in self.params.samples else len(r) / 10 for i, r in enumerate(batch.responses)]


def register() -> None:
    registry._REWARDS["nan_at"] = f"{__name__}:NaNAtReward"
    if "nan_at" not in registry.REWARD_KINDS:
        registry.REWARD_KINDS.append("nan_at")
