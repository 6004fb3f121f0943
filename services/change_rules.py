"""Rules for changing a run mid-flight, shared by the coordinator and the learner (pure, no Ray): which
hyperparameters may change, where their current value lives, the score range of each reward kind, the spec
that travels with the objective state, and JSON-safe conversions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from pydantic import ValidationError

from services.objectives.registry import build_objective, objective_config_from_dict

if TYPE_CHECKING:
    from services.config import RewardConfig
    from services.objectives.base import Objective

SPEC_KEY = "spec"  # entry of the handed-out state: {"config": objective config dict, "directions": [...]}
DIRECTIONS = ("ge", "le", "eq")

# Hyperparameters that cannot change mid-run, with the reason given to the caller.
_SEEDS_STATE = "only sets the initial value of learned state, which already exists"
_STREAMS = "changes the number of reward streams (value heads); start a new run"
_SEARCH = "is part of the running Nelder–Mead search's state; start a new run to change it"
FROZEN_FIELDS: dict[str, str] = {
    "seed": "only seeds the objective's initial random state, which already exists",
    "multiplier_init": _SEEDS_STATE,
    "multiplier_init_std": _SEEDS_STATE,
    "lambda_init": _SEEDS_STATE,
    "kl_in_streams": _STREAMS,
    "constraints": _STREAMS,
    "behaviour_sampling": "changes how the rollout actors sample; start a new run",
    "behaviour_temperature": "is read by the rollout actors at start; start a new run",
}
# Per objective, on top of FROZEN_FIELDS.
OBJECTIVE_FROZEN_FIELDS: dict[str, dict[str, str]] = {
    "nm_ppo": {k: _SEARCH for k in ("alpha", "gamma", "rho", "sigma", "tol", "cache_mode", "cache_tol")},
}


def frozen_fields(objective: str) -> dict[str, str]:
    """Hyperparameters of this objective that cannot change mid-run, with the reason."""
    return {**FROZEN_FIELDS, **OBJECTIVE_FROZEN_FIELDS.get(objective, {})}


# Hyperparameters whose current value lives in the objective's state: field -> path in the state.
STATE_FIELDS: dict[str, tuple[str, ...]] = {
    "kl_coef": ("kl", "beta"),
    "target_kl": ("kl", "target"),
    "total_steps": ("total_steps",),
}
# Closed score range of each bounded reward kind; thresholds outside it can never be met.
SCORE_RANGES: dict[str, tuple[float, float]] = {
    "meteor": (0.0, 1.0),
    "bleu": (0.0, 1.0),
    "sacrebleu": (0.0, 1.0),
    "rouge": (0.0, 1.0),
    "classifier": (0.0, 1.0),
    "similarity": (-1.0, 1.0),
}
MAX_ABS_THRESHOLD = 1e9  # unbounded kinds (length, hf_model): only absurd magnitudes are refused


@dataclass
class Change:
    """One audited change: who asked, when, what, and the first iteration it applies to."""

    time: float
    who: str
    target: str
    old: Any
    new: Any
    applies_from: int
    seq: int = 0  # position in the audit log, 0-based


class ChangeError(ValueError):
    """A rejected request; the state is untouched. `status` is the HTTP status the control plane returns."""

    status = 422


class NotFoundError(ChangeError):
    status = 404


class ConflictError(ChangeError):
    """The request is well-formed but does not apply to this run in its current state."""

    status = 409


def finite_or_none(value: Any) -> float | None:
    """A JSON-safe float: NaN/inf (e.g. an unset threshold) become None."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def float32_value(value: Any) -> float | None:
    """A float32 tensor entry as the shortest decimal that round-trips (0.23, not 0.23000000417232513)."""
    value = finite_or_none(value)
    return None if value is None else float(f"{value:.7g}")


def check_finite(name: str, value: Any) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ChangeError(f"{name} must be a finite number, got {value!r}")
    if isinstance(value, dict):
        for k, v in value.items():
            check_finite(f"{name}.{k}", v)
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            check_finite(f"{name}[{i}]", v)


def rewards_with_directions(rewards: dict[str, "RewardConfig"], directions: dict[str, str]) -> dict[str, "RewardConfig"]:
    """The reward configs with explicit constraint directions (validated copies)."""
    return {name: r.model_copy(update={"direction": directions.get(name, r.direction)}) for name, r in rewards.items()}


def objective_for_state(objective: "Objective", state: dict[str, Any], rewards: dict[str, "RewardConfig"]) -> "Objective":
    """The learner's objective for a state handed out by `begin_iteration`.

    Rebuilds the objective when the coordinator's spec (hyperparameters, directions) differs from the local
    copy, then loads the state. Use instead of `objective.load_state_dict(state)`.
    """
    spec = state.get(SPEC_KEY)
    if spec is not None:
        config = objective_config_from_dict(spec["config"])
        directions = list(spec["directions"])
        if config != objective.config or directions != list(objective.directions):
            objective = build_objective(config, rewards_with_directions(rewards, dict(zip(objective.reward_names, directions))))
    objective.load_state_dict(state)
    return objective


def validation_message(prefix: str, err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"])
        parts.append(f"{where}: {e['msg']}" if where else e["msg"])
    return f"{prefix}: " + "; ".join(parts)


def has_path(state: dict[str, Any], path: tuple[str, ...]) -> bool:
    node: Any = state
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return False
        node = node[key]
    return True


def set_path(state: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = state
    for key in path[:-1]:
        child = dict(node[key])
        node[key] = child
        node = child
    node[path[-1]] = value


def json_safe(value: Any) -> Any:
    """Plain JSON data: tensors to lists, non-finite floats to None, tuples to lists."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, torch.Tensor):
        return json_safe(value.tolist())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)
