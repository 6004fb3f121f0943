"""Read side of the coordinator: JSON views of the state for REST, the CLI and the live page.

The view functions are pure functions of a `CoordinatorState` (call them under its lock). `published`
serves them cheaply: the first read after a change (every transaction bumps `state.revision`) renders every
view once, pre-serialised, into an immutable `Published` snapshot; later reads return its bytes without
taking the lock, and its ETag lets a client poll with `If-None-Match` for a 304.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from services.coordinator.changes import require_reward
from services.coordinator.errors import ChangeError, ConflictError, NotFoundError
from services.coordinator.state import CoordinatorState
from services.coordinator.values import finite_or_none, float32_value, json_safe


def status(state: CoordinatorState) -> dict[str, Any]:
    record = state.last_record
    c = state.controls
    times = list(state.commit_times)
    seconds_per_iteration = (times[-1] - times[0]) / (len(times) - 1) if len(times) > 1 else None
    run_state = "stopped" if c.stopped else "stopping" if c.stop else "paused" if c.paused else "running"
    if state.waiting and not c.stopped:
        run_state = "waiting for resources"
    return {
        "objective": state.spec.config.name,
        "state": run_state,
        "waiting_for": state.waiting,
        "iteration": state.last_committed,
        "running_iteration": state.running,
        "next_iteration": state.next_iteration(),
        "paused": c.paused,
        "stop_requested": c.stop,
        "checkpoint_requested": c.checkpoint,
        "stopped": c.stopped,
        "throughput": {
            "tokens_per_second": finite_or_none(record.get("tokens_per_second")),
            "seconds_per_iteration": finite_or_none(seconds_per_iteration),
        },
        "last_eval": None if state.last_eval is None else json_safe(state.last_eval),
        "pending_changes": len(state.queued),
        "audit_entries": len(state.audit),
        "uptime_seconds": time.time() - state.started,
    }


def _objective_metrics(state: CoordinatorState) -> dict[str, float]:
    try:
        return dict(state.objective.metrics())
    except (ValueError, RuntimeError):  # e.g. l3m before its schedule length is known
        return {}


def constraint(state: CoordinatorState, name: str, metrics: dict[str, float] | None = None) -> dict[str, Any]:
    require_reward(state, name)
    metrics = _objective_metrics(state) if metrics is None else metrics
    i = state.objective.reward_names.index(name)
    constrained = name in state.constrained()
    record = state.last_record
    multiplier = metrics.get(f"multiplier/{name}")
    weight = metrics.get(f"weight/{name}")
    if weight is None and multiplier is None:
        weight = float(state.objective.weights[i])  # fixed weight α of a composite reward
    has_direction = constrained and type(state.spec.config).constraint_direction is not None
    pending: dict[str, Any] = {}
    if name in state.queued.thresholds:
        pending["threshold"] = state.queued.thresholds[name]
    if name in state.queued.directions:
        pending["direction"] = state.queued.directions[name]
    return {
        "name": name,
        "kind": state.config.rewards[name].kind,
        "constrained": constrained,
        "threshold": float32_value(state.objective.thresholds[i]) if constrained else None,
        "direction": state.spec.directions[i] if has_direction else None,
        "current": finite_or_none(record.get(f"reward/{name}")),
        "violation": finite_or_none(record.get(f"violation/{name}")) if constrained else None,
        "multiplier": finite_or_none(multiplier),
        "weight": finite_or_none(weight),
        "measured_at": state.last_committed if record else None,
        "pending": ({**pending, "applies_from": state.next_iteration()} if pending else None),
    }


def constraints(state: CoordinatorState) -> list[dict[str, Any]]:
    metrics = _objective_metrics(state)
    return [constraint(state, name, metrics) for name in state.reward_names]


def objective(state: CoordinatorState) -> dict[str, Any]:
    config_cls = type(state.spec.config)
    return {
        "name": state.spec.config.name,
        "hyperparameters": state.spec.config.model_dump(mode="json"),
        "version": state.spec.version,
        "pending": dict(state.queued.objective),
        "applies_from": state.next_iteration() if state.queued.objective else None,
        "frozen": config_cls.frozen_fields(),
        "descriptions": {k: f.description or "" for k, f in config_cls.model_fields.items()},
        "state": {k: finite_or_none(v) for k, v in _objective_metrics(state).items()},
    }


def nelder_mead(state: CoordinatorState) -> dict[str, Any]:
    search = getattr(state.objective, "nelder_mead", None)  # nm_ppo owns its search
    name = state.spec.config.name
    if search is None and hasattr(state.objective, "nelder_mead"):
        raise ConflictError(f"the Nelder–Mead search of {name} starts at the first held-out evaluation (evaluation.every)")
    if search is None:
        raise NotFoundError(f"objective {name} runs no Nelder–Mead search (only nm_ppo does)")
    saved = search.state_dict()
    try:
        best_theta, best_f = search.best()
        best = {"thresholds": [float(v) for v in best_theta], "f": float(best_f)}
    except RuntimeError:  # nothing scored yet
        best = None
    return json_safe({
        "phase": saved["phase"],
        "iteration": saved["iteration"],
        "simplex": saved["simplex"],
        "values": saved["values"],
        "pending": saved["pending"],
        "best": best,
        "total_iterations": search.total_iterations,
        "history": saved["history"],
        "target": getattr(state.objective, "target", None),
        "converged": getattr(state.objective, "converged", None),
        "windows": getattr(state.objective, "history", None),
    })


def audit(state: CoordinatorState, since: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
    entries = state.audit[since:]
    if limit is not None:
        entries = entries[-limit:] if limit else []
    return [json_safe(asdict(c)) for c in entries]


# --- published snapshots -------------------------------------------------------------------------------
def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()


@dataclass(frozen=True)
class Published:
    """Every read view of one revision, pre-serialised. A view that refuses (e.g. the Nelder–Mead search
    of an objective without one) is stored as its error."""

    revision: int
    etag: str
    bodies: dict[str, bytes | ChangeError] = field(default_factory=dict)  # "status" lacks its closing uptime
    constraint_bodies: dict[str, bytes] = field(default_factory=dict)
    started: float = 0.0

    def status_body(self) -> bytes:
        prefix = self.bodies["status"]
        assert isinstance(prefix, bytes)
        return prefix + b',"uptime_seconds":' + repr(time.time() - self.started).encode() + b"}"


_publish_lock = threading.Lock()  # one renderer at a time; readers of a fresh snapshot never wait


def published(state: CoordinatorState) -> Published:
    """The snapshot of the state's current revision, rendered on the first read after a change."""
    current = state.published
    if current is not None and current.revision == state.revision:
        return current
    with _publish_lock, state.lock:
        current = state.published
        if current is not None and current.revision == state.revision:
            return current
        bodies: dict[str, bytes | ChangeError] = {}
        view = status(state)
        view.pop("uptime_seconds")
        bodies["status"] = _dumps(view)[:-1]
        listed = constraints(state)
        bodies["constraints"] = _dumps(listed)
        bodies["objective"] = _dumps(objective(state))
        bodies["health"] = _dumps({"status": "ok", "iteration": state.last_committed})
        try:
            bodies["nelder_mead"] = _dumps(nelder_mead(state))
        except ChangeError as err:
            bodies["nelder_mead"] = err
        snapshot = Published(
            state.revision, f'W/"{int(state.started * 1e6):x}-{state.revision}"', bodies, {c["name"]: _dumps(c) for c in listed}, state.started
        )
        state.published = snapshot
        return snapshot
