"""Objective registry: maps `objective=NAME` to an implementation and its typed options."""

from __future__ import annotations

import difflib
import importlib
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from services.config import RewardConfig
    from services.objectives.base import Objective


class ObjectiveConfig(BaseModel):
    """Options shared by every objective; each objective subclasses this with its own fields."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    name: str = Field(description="Objective name.")
    uses_thresholds: ClassVar[bool] = False

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


# Objective name -> "module:Class". Each class carries its `config_cls`. Modules are imported on first use.
OBJECTIVES: dict[str, str] = {
    "ppo": "services.objectives.composite:FixedWeightPPO",
}


def unknown_name_message(kind: str, name: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"unknown {kind} '{name}'{hint} (valid: {', '.join(sorted(valid))})"


def objective_class(name: str) -> type["Objective"]:
    if name not in OBJECTIVES:
        raise ValueError(unknown_name_message("objective", name, list(OBJECTIVES)))
    module_name, cls_name = OBJECTIVES[name].split(":")
    return getattr(importlib.import_module(module_name), cls_name)


def objective_config_from_dict(data: dict[str, Any]) -> ObjectiveConfig:
    return objective_class(str(data.get("name"))).config_cls.model_validate(data)


def build_objective(config: ObjectiveConfig, rewards: dict[str, "RewardConfig"]) -> "Objective":
    return objective_class(config.name)(config, rewards)
