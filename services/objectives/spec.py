"""The objective's spec and the one bridge from spec + learned state to an `Objective` (pure, no Ray).

The coordinator owns the run's `ObjectiveSpec`: the objective's validated hyperparameters, each reward's
constraint direction, and a version that grows by one whenever either changes (a `PATCH /v1/objective` or a
direction change, applied at an iteration boundary). Every iteration it hands the learner the spec with the
objective's learned state (multipliers, weights, thresholds, KL controller, search state). `objective_for`
turns that pair into the objective the iteration trains with, rebuilding it only when the version moved,
so a change reaches the loss from exactly the iteration the REST answer announced. Nothing else builds
objectives from specs: the coordinator and the learner both come through here.

Rebuilding (instead of setting attributes on a live objective) is what makes every hyperparameter
patchable: objectives derive helpers from their config in `__init__` (the multiplier optimiser copies its
lr, constrained PPO its direction signs).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from services.objectives.options import ObjectiveConfig
from services.objectives.registry import build_objective, objective_config_from_dict

if TYPE_CHECKING:
    from services.objectives.base import Objective
    from services.rewards.config import RewardConfig


@dataclass(frozen=True)
class ObjectiveSpec:
    """What the objective is: hyperparameters, directions (reward order), and the version of both."""

    config: ObjectiveConfig
    directions: tuple[str, ...]
    version: int = 0

    @classmethod
    def at_launch(cls, config: ObjectiveConfig, rewards: dict[str, "RewardConfig"]) -> "ObjectiveSpec":
        own = type(config).constraint_direction or "ge"
        return cls(config, tuple(r.direction or own for r in rewards.values()))

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config.model_dump(mode="json"), "directions": list(self.directions), "version": self.version}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ObjectiveSpec":
        return cls(objective_config_from_dict(data["config"]), tuple(data["directions"]), int(data.get("version", 0)))

    def changed(self, config: ObjectiveConfig, directions: tuple[str, ...]) -> "ObjectiveSpec":
        """The next version (the same spec when nothing differs)."""
        if config == self.config and directions == self.directions:
            return self
        return ObjectiveSpec(config, directions, self.version + 1)

    def rewards(self, rewards: dict[str, "RewardConfig"]) -> dict[str, "RewardConfig"]:
        """The reward configs with this spec's directions (validated copies, reward order kept)."""
        return {name: r.model_copy(update={"direction": d}) for (name, r), d in zip(rewards.items(), self.directions)}


@dataclass
class Handout:
    """What the learner receives each iteration: the spec and the learned state to start from."""

    spec: ObjectiveSpec
    state: dict[str, Any] = field(default_factory=dict)


def build(spec: ObjectiveSpec, rewards: dict[str, "RewardConfig"], state: dict[str, Any] | None = None) -> "Objective":
    """A fresh objective for `spec`, carrying `state` when given."""
    objective = build_objective(spec.config, spec.rewards(rewards))
    if state is not None:
        objective.load_state_dict(state)
    return objective


def objective_for(
    handout: Handout, rewards: dict[str, "RewardConfig"], current: "Objective | None", current_version: int | None
) -> "Objective":
    """The objective an iteration trains with: `current` with the handed-out state loaded, or a rebuild from
    the spec when its version differs from `current_version` (or there is no current objective yet)."""
    if current is None or current_version != handout.spec.version:
        return build(handout.spec, rewards, handout.state)
    current.load_state_dict(handout.state)
    return current


def state_with_patch(config_cls: type[ObjectiveConfig], state: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """A copy of `state` with each patched hyperparameter that lives in the learned state written into it
    (`ObjectiveConfig.state_fields`, e.g. kl_coef → the KL controller's current β)."""
    out = copy.copy(state)
    for key, value in patch.items():
        path = config_cls.state_fields.get(key)
        if path is not None and _has_path(out, path):
            _set_path(out, path, value)
    return out


def _has_path(state: dict[str, Any], path: tuple[str, ...]) -> bool:
    node: Any = state
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return False
        node = node[key]
    return True


def _set_path(state: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = state
    for key in path[:-1]:
        child = dict(node[key])  # copy on the way down: the caller's nested dicts stay untouched
        node[key] = child
        node = child
    node[path[-1]] = value
