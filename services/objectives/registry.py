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
    # The constraint direction (ge/le/eq) the objective is defined for, or None. `validate_rewards` rejects
    # rewards whose `direction` it cannot express; a config layer may use this to default them instead.
    constraint_direction: ClassVar[str | None] = None

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


# Objective name -> "module:Class". Each class carries its `config_cls`. Modules are imported on first use.
OBJECTIVES: dict[str, str] = {
    "ppo": "services.objectives.composite:FixedWeightPPO",
    "ppo_sat": "services.objectives.composite:PPOSat",
    "fast_rl": "services.objectives.composite:FastRL",
    "mu_ppo": "services.objectives.lagrangian:MuPPO",
    "xi_ppo": "services.objectives.lagrangian:XiPPO",
    "nm_ppo": "services.objectives.nm_ppo:NMPPO",
    "all_ppo": "services.objectives.lagrangian:AllPPO",
    "reward_dropout": "services.objectives.dropout:RewardDropout",
    "l3m": "services.objectives.barrier:L3M",
    "ppo_lagrangian": "services.objectives.ppo_lagrangian:PPOLagrangian",
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
