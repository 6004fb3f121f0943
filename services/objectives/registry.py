"""Objective registry: maps `objective=NAME` to an implementation and its typed options."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from services.config.names import unknown_name_message
from services.objectives.options import ObjectiveConfig

if TYPE_CHECKING:
    from services.rewards.config import RewardConfig
    from services.objectives.base import Objective


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


def objective_class(name: str) -> type["Objective"]:
    if name not in OBJECTIVES:
        raise ValueError(unknown_name_message("objective", name, list(OBJECTIVES)))
    module_name, cls_name = OBJECTIVES[name].split(":")
    return getattr(importlib.import_module(module_name), cls_name)


def objective_config_from_dict(data: dict[str, Any]) -> ObjectiveConfig:
    return objective_class(str(data.get("name"))).config_cls.model_validate(data)


def build_objective(config: ObjectiveConfig, rewards: dict[str, "RewardConfig"]) -> "Objective":
    return objective_class(config.name)(config, rewards)
