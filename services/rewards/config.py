"""A reward's configuration (`rewards.NAME.*`): its kind, fixed weight, constraint threshold and direction.

It lives with the rewards, not in the run config, so the objectives (which read thresholds and directions)
and the config schema both depend on it without depending on each other.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Direction = Literal["ge", "le", "eq"]


class RewardConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    kind: str = Field(description="Reward function kind (meteor, bleu, sacrebleu, rouge, length, similarity, classifier, hf_model).")
    weight: float = Field(1.0, description="Fixed weight α for composite objectives (ppo, ppo_sat).")
    threshold: float | None = Field(None, description="Constraint threshold θ for constrained objectives.")
    direction: Direction | None = Field(
        None,
        description="Constraint direction: ge (r ≥ θ), le (r ≤ θ), eq (r = θ); null = the objective's own "
        "(ge for mu_ppo/ppo_lagrangian/l3m, eq for xi_ppo/nm_ppo, le for all_ppo).",
    )
    actor: int = Field(0, ge=0, description="Index of the reward actor that hosts this reward.")
    params: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments of the reward function.")

    @field_validator("weight", "threshold")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v
