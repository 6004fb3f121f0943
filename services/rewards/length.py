"""Response length reward: a cheap, exactly known signal (word count, or distance to a target length)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import Field, field_validator

from services.rewards.base import RewardFunction, RewardParams, ScoringBatch


class LengthParams(RewardParams):
    target: int | None = Field(
        None, ge=0, description="If set, reward = -|words - target| (closer is better); else reward = words."
    )
    normalize: int | None = Field(
        None, gt=0, description="Divide the reward by this maximum length (e.g. max_new_tokens); None = raw words."
    )

    @field_validator("target", "normalize", mode="before")
    @classmethod
    def _not_bool(cls, v: Any) -> Any:
        if isinstance(v, bool):  # pydantic would read true as 1
            raise ValueError("must be an integer, not a boolean")
        return v


class LengthReward(RewardFunction):
    """Words = whitespace-separated tokens of the response."""

    kind = "length"
    Params = LengthParams
    params: LengthParams

    def _score(self, batch: ScoringBatch) -> Sequence[float]:
        target, scale = self.params.target, self.params.normalize or 1
        lengths = [len(response.split()) for response in batch.responses]
        if target is None:
            return [n / scale for n in lengths]
        return [-abs(n - target) / scale for n in lengths]
