"""Requests that change a run, validated and queued: constraint thresholds and directions, objective
hyperparameters, run controls (pause/resume/stop/checkpoint). The only writer of queued changes.

Every accepted change is audited (`audit.Change`) and applied to the queue by `apply` — the same function
that replays the audit log after a restart, so the log is the write-ahead log. A change requested while
iteration k runs applies from iteration k + 1 (`applies_from`); `protocol.begin_iteration` applies the queue.

Validation reuses the owners' rules: the objective's config model validates hyperparameters (strict, merged
with the queued ones) and lists the fields frozen after start; each reward class declares its score range.
A refused request raises a `ChangeError` (422/404/409) and leaves the state untouched.
"""

from __future__ import annotations

import math
import time
from typing import Any, get_args

from pydantic import ValidationError

from services.config.names import unknown_name_message
from services.coordinator.audit import Change
from services.coordinator.errors import ChangeError, ConflictError, NotFoundError
from services.coordinator.state import Controls, CoordinatorState
from services.coordinator.values import check_finite, float32_value, validation_message
from services.rewards.config import Direction
from services.rewards.registry import threshold_range

DIRECTIONS: tuple[str, ...] = get_args(Direction)
ACTIONS = ("pause", "resume", "stop", "checkpoint")


# --- audit + apply ---------------------------------------------------------------------------------
def record(state: CoordinatorState, who: str, target: str, old: Any, new: Any, applies_from: int | None = None) -> Change:
    start = state.next_iteration() if applies_from is None else applies_from
    change = Change(time.time(), who, target, old, new, start, len(state.audit))
    state.audit.append(change)
    return change


def change(state: CoordinatorState, who: str, target: str, old: Any, new: Any, applies_from: int | None = None) -> Change:
    """Audit one change and apply it with `apply`, the same code that replays the log after a restart."""
    entry = record(state, who, target, old, new, applies_from)
    apply(state, entry)
    return entry


def apply(state: CoordinatorState, entry: Change) -> None:
    """The effect of an audited change on the queue and the controls."""
    target, new = entry.target, entry.new
    kind, _, rest = target.partition(".")
    if kind == "rewards":
        reward, _, what = rest.rpartition(".")
        (state.queued.thresholds if what == "threshold" else state.queued.directions)[reward] = new
    elif kind == "objective":
        state.queued.objective[rest] = new
    elif target in ("control.paused", "control.stop", "control.checkpoint"):
        setattr(state.controls, rest, bool(new))
    elif target == "checkpoint":
        state.controls.checkpoint = False
    elif target == "run.stopped":
        state.controls.stop, state.controls.stopped = False, True


# --- checks ------------------------------------------------------------------------------------------
def _check_open(state: CoordinatorState) -> None:
    if state.controls.stopped:
        raise ConflictError("the run has stopped; changes are no longer accepted (resume the run to change it)")


def require_reward(state: CoordinatorState, reward: str) -> None:
    if reward not in state.objective.reward_names:
        raise NotFoundError(unknown_name_message("reward", reward, state.reward_names))


def _require_constraint(state: CoordinatorState, reward: str) -> None:
    require_reward(state, reward)
    name = state.spec.config.name
    if not type(state.spec.config).uses_thresholds:
        raise ConflictError(f"objective {name} has no thresholds (its rewards are not constraints)")
    if reward not in state.constrained():
        raise ConflictError(f"reward '{reward}' is not a constraint of objective {name} (constraints: {', '.join(state.constrained())})")


def _check_threshold(state: CoordinatorState, reward: str, value: Any) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ChangeError(f"threshold for '{reward}' must be a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ChangeError(f"threshold for '{reward}' must be a finite number, got {value!r}")
    kind = state.config.rewards[reward].kind
    low, high = threshold_range(kind)
    if not low <= value <= high:
        raise ChangeError(f"threshold {value!r} for '{reward}' is out of range: {kind} scores lie in [{low:g}, {high:g}]")
    return float(value)


def _check_direction(state: CoordinatorState, reward: str, direction: Any) -> None:
    config_cls = type(state.spec.config)
    if config_cls.constraint_direction is None:
        raise ConflictError(f"objective {state.spec.config.name} has no constraint directions (its penalty is two-sided)")
    if direction not in DIRECTIONS:
        raise ChangeError(f"direction for '{reward}' must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
    effective = {**state.directions(), **state.queued.directions, reward: direction}
    try:
        queued_config(state).validate_rewards(rewards_with(state, effective))
    except ValueError as err:
        raise ChangeError(str(err)) from None


def queued_config(state: CoordinatorState, extra: dict[str, Any] | None = None) -> Any:
    """The objective config with the queued (and `extra`) hyperparameters applied, validated strictly."""
    merged = {**state.spec.config.model_dump(mode="json"), **state.queued.objective, **(extra or {})}
    return type(state.spec.config).model_validate(merged, strict=True)  # no "0.1" -> 0.1, no true -> 1


def rewards_with(state: CoordinatorState, directions: dict[str, str]) -> dict[str, Any]:
    return {n: r.model_copy(update={"direction": directions.get(n, r.direction)}) for n, r in state.config.rewards.items()}


# --- requests --------------------------------------------------------------------------------------
def update_constraint(
    state: CoordinatorState, reward: str, threshold: float | None = None, direction: str | None = None, who: str = "api"
) -> list[Change]:
    """Threshold and/or direction of one constraint: both are validated before either is queued."""
    if threshold is None and direction is None:
        raise ChangeError("give a threshold, a direction, or both")
    with state.transaction():
        _require_constraint(state, reward)
        if threshold is not None:
            threshold = _check_threshold(state, reward, threshold)
        if direction is not None:
            _check_direction(state, reward, direction)
        _check_open(state)
        out = []
        if direction is not None:
            old = state.queued.directions.get(reward, state.directions()[reward])
            out.append(change(state, who, f"rewards.{reward}.direction", old, direction))
        if threshold is not None:
            index = state.objective.reward_names.index(reward)
            old = state.queued.thresholds.get(reward, float32_value(state.objective.thresholds[index]))
            out.append(change(state, who, f"rewards.{reward}.threshold", old, threshold))
        state.stage(log_only=True)
        return out


def set_threshold(state: CoordinatorState, reward: str, value: float, who: str = "api") -> Change:
    return update_constraint(state, reward, threshold=value, who=who)[0]


def set_direction(state: CoordinatorState, reward: str, direction: str, who: str = "api") -> Change:
    return update_constraint(state, reward, direction=direction, who=who)[0]


def patch_objective(state: CoordinatorState, values: dict[str, Any], who: str = "api") -> list[Change]:
    """Queue new hyperparameter values, validated by the objective's own config model (merged, strict)."""
    if not isinstance(values, dict) or not values:
        raise ChangeError('give at least one hyperparameter to change, e.g. {"multiplier_lr": 0.05}')
    with state.transaction():
        config_cls = type(state.spec.config)
        name = state.spec.config.name
        frozen = config_cls.frozen_fields()
        for key, value in values.items():
            if key == "name":
                raise ConflictError("the objective cannot change mid-run; start a new run with objective=NAME")
            if key in frozen:
                raise ConflictError(f"objective.{key} {frozen[key]}; it cannot change mid-run")
            if key not in config_cls.model_fields:
                raise ChangeError(unknown_name_message(f"{name} hyperparameter", key, [f for f in config_cls.model_fields if f != "name"]))
            check_finite(key, value)
        try:
            config = queued_config(state, values)
            config.validate_rewards(rewards_with(state, {**state.directions(), **state.queued.directions}))
        except ValidationError as err:
            raise ChangeError(validation_message(f"objective {name}", err)) from None
        except ValueError as err:
            raise ChangeError(str(err)) from None
        _check_open(state)
        effective = {**state.spec.config.model_dump(mode="json"), **state.queued.objective}
        dumped = config.model_dump(mode="json")
        out = [change(state, who, f"objective.{key}", effective[key], dumped[key]) for key in values]
        state.stage(log_only=True)
        return out


def request(state: CoordinatorState, action: str, who: str = "api") -> tuple[Change | None, dict[str, bool]]:
    """pause | resume | stop | checkpoint. Idempotent: a request that changes nothing is not audited."""
    with state.transaction():
        if action not in ACTIONS:
            raise NotFoundError(unknown_name_message("action", action, list(ACTIONS)))
        _check_open(state)
        c = state.controls
        entry = None
        if action == "pause" and not c.paused:
            entry = change(state, who, "control.paused", False, True)
        elif action == "resume" and c.paused:
            entry = change(state, who, "control.paused", True, False)
        elif action == "stop" and not c.stop:
            entry = change(state, who, "control.stop", False, True)
        elif action == "checkpoint" and not c.checkpoint:
            entry = change(state, who, "control.checkpoint", False, True)
        if entry is not None:
            state.stage(log_only=True)
        return entry, controls(state)


def controls(state: CoordinatorState) -> dict[str, bool]:
    return {"paused": state.controls.paused, "stop": state.controls.stop, "checkpoint": state.controls.checkpoint}


def poll_controls(state: CoordinatorState) -> dict[str, bool]:
    with state.lock:
        return controls(state)


def ack_checkpoint(state: CoordinatorState, path: str) -> None:
    """The driver saved a checkpoint: clear the request (if any) and audit where it went."""
    with state.transaction():
        change(state, "driver", "checkpoint", None, str(path), state.last_committed + 1)
        state.stage(log_only=True)


def mark_stopped(state: CoordinatorState) -> None:
    """The driver ended the run after a stop request."""
    with state.transaction():
        change(state, "driver", "run.stopped", False, True, state.last_committed + 1)
        state.stage(log_only=True)


def new_session(state: CoordinatorState) -> None:
    """Resuming from a checkpoint: one-shot requests and pause of the previous session do not carry over."""
    with state.transaction():
        c = state.controls
        for target, value in (("control.paused", c.paused), ("control.stop", c.stop), ("control.checkpoint", c.checkpoint)):
            if value:
                change(state, "resume", target, True, False, state.last_committed + 1)
        state.controls = Controls()
        state.stage()
