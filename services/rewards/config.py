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
    threshold: float | Literal["auto"] | None = Field(
        None,
        description="Constraint threshold θ for constrained objectives; 'auto' = measured: the held-out evaluation "
        "before the first update gives the untrained policy's value v, and θ = v moved auto_margin·|v| in the "
        "constraint's direction (above for ge/eq, below for le), within the reward's score range.",
    )
    auto_margin: float = Field(0.25, gt=0.0, description="threshold=auto: relative distance of θ beyond the starting value.")
    direction: Direction | None = Field(
        None,
        description="Constraint direction: ge (r ≥ θ), le (r ≤ θ), eq (r = θ); null = the objective's own "
        "(ge for mu_ppo/ppo_lagrangian/l3m, eq for xi_ppo/nm_ppo, le for all_ppo).",
    )
    actor: int = Field(0, ge=0, description="Index of the reward actor that hosts this reward.")
    params: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments of the reward function.")

    @field_validator("weight", "threshold")
    @classmethod
    def _finite(cls, v: float | str | None) -> float | str | None:
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v

    def threshold_value(self) -> float:
        """θ as a number; NaN when unset or not measured yet (threshold=auto)."""
        return float(self.threshold) if isinstance(self.threshold, (int, float)) else float("nan")


def auto_threshold(start: float, direction: str, margin: float, score_range: tuple[float, float] | None) -> float:
    """θ for threshold=auto: `margin`·|start| beyond the untrained policy's value, in the constraint's direction
    (a floor of 0.01 absolute when the start is 0), kept inside the reward's score range."""
    step = margin * max(abs(start), 0.01)
    theta = start - step if direction == "le" else start + step
    if score_range is not None:
        theta = min(max(theta, score_range[0]), score_range[1])
    return theta
