"""The options every objective shares (`objective.*`); each objective subclasses `ObjectiveConfig` with its own
fields. The rules for changing them mid-run live here too, on the classes that own the fields:
`frozen_after_start` (refused by `PATCH /v1/objective` with the reason) and `state_fields` (hyperparameters
whose current value is part of the learned state, e.g. the KL coefficient, written into it when patched).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from services.rewards.config import RewardConfig


class ObjectiveConfig(BaseModel):
    """Options shared by every objective; each objective subclasses this with its own fields."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    name: str = Field(description="Objective name.")
    uses_thresholds: ClassVar[bool] = False
    # The constraint direction (ge/le/eq) the objective is defined for, or None. `validate_rewards` rejects
    # rewards whose `direction` it cannot express; a config layer may use this to default them instead.
    constraint_direction: ClassVar[str | None] = None
    # Fields `PATCH /v1/objective` refuses once the run has started, with the reason given to the caller.
    # Each subclass lists its own; `frozen_fields()` merges them along the class hierarchy.
    frozen_after_start: ClassVar[dict[str, str]] = {}
    # Fields whose current value lives in the learned state (path into `Objective.state_dict()`): a patch
    # writes the new value there too, e.g. `kl_coef` sets the current β of the KL controller.
    state_fields: ClassVar[dict[str, tuple[str, ...]]] = {
        "kl_coef": ("kl", "beta"),
        "target_kl": ("kl", "target"),
        "total_steps": ("total_steps",),
    }

    @classmethod
    def frozen_fields(cls) -> dict[str, str]:
        """Fields that cannot change mid-run, with the reason (the name always: it picks the objective)."""
        merged: dict[str, str] = {}
        for klass in reversed(cls.__mro__):
            merged.update(vars(klass).get("frozen_after_start", {}))
        frozen = {k: v for k, v in merged.items() if k in cls.model_fields}
        return {**frozen, "name": "is the run's objective; start a new run with objective=NAME"}

    def complete(self, run: Any) -> None:
        """Fill options whose default depends on the rest of the run's config (a `RootConfig`)."""

    def validate_rewards(self, rewards: dict[str, "RewardConfig"]) -> None:
        """Raise ValueError naming the reward if the objective cannot use this reward set."""
        if self.uses_thresholds:
            missing = [name for name, r in rewards.items() if r.threshold is None]
            if missing:
                raise ValueError(
                    f"objective {self.name} needs a threshold for every reward; missing for: "
                    + ", ".join(missing)
                    + f" (set rewards.{missing[0]}.threshold=VALUE)"
                )
