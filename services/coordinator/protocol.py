"""The iteration boundary, where queued changes take effect, and the coordinator's side of resume.

Per iteration k: `begin_iteration(k)` applies the queue — a hyperparameter or direction change makes a new
`ObjectiveSpec` version and rebuilds the objective around the current learned state — and returns the
`Handout` (spec + state) the learner trains iteration k with; `commit(k, result)` adopts the learner's new
state and persists. Changes queued while k runs survive the commit and apply from k + 1.
"""

from __future__ import annotations

import time
from typing import Any

from services.coordinator.audit import Change
from services.coordinator.changes import apply, queued_config, record
from services.coordinator.state import Controls, CoordinatorState, Launch, Queued
from services.coordinator.values import finite_or_none, float32_value
from services.objectives import spec as objective_spec
from services.objectives.registry import objective_class
from services.objectives.spec import Handout, ObjectiveSpec


def _respec(state: CoordinatorState, config: Any, directions: dict[str, str], patch: dict[str, Any]) -> None:
    """Adopt a new spec (next version) and rebuild the objective around the current learned state; patched
    fields that live in the state (e.g. kl_coef → β) are written into it."""
    ordered = tuple({**state.directions(), **directions}[n] for n in state.objective.reward_names)
    new = state.spec.changed(config, ordered)
    if new is state.spec:
        return
    learned = objective_spec.state_with_patch(type(config), state.objective.state_dict(), patch)
    state.objective = objective_spec.build(new, state.config.rewards, learned)
    state.spec = new


def begin_iteration(state: CoordinatorState, iteration: int) -> Handout:
    with state.transaction():
        q = state.queued
        if q.objective or q.directions:
            _respec(state, queued_config(state), q.directions, q.objective)
            q.objective.clear()
            q.directions.clear()
        for reward, value in q.thresholds.items():
            state.objective.set_threshold(reward, value)
        q.thresholds.clear()
        state.running = iteration
        state.controls.stopped = False  # a run that iterates again (e.g. resumed) is no longer stopped
        return Handout(state.spec, state.objective.state_dict())


def commit(state: CoordinatorState, iteration: int, result: dict[str, Any]) -> dict[str, Any]:
    with state.transaction():
        state.objective.load_state_dict(result["objective_state"])
        state.last_committed = iteration
        state.running = None
        state.last_record = result["record"]
        evals = {k: v for k, v in state.last_record.items() if k.startswith("eval/")}
        if evals:
            state.last_eval = {"iteration": iteration, "metrics": evals}
        state.commit_times.append(time.time())
        state.telemetry.observe_record(state.last_record, iteration)
        state.stage()
        return state.last_record


def observe(state: CoordinatorState, record: dict[str, Any]) -> None:
    """The driver's completed record of a committed iteration (adds weight-sync time, wall time and the
    evaluation, which the learner's record cannot know): metrics and history only, no state change."""
    state.telemetry.observe_record(record)


def record_evaluation(state: CoordinatorState, iteration: int, evaluation: dict[str, Any]) -> None:
    """A held-out evaluation of the policy entering `iteration` (the driver evaluates before the update)."""
    with state.transaction():
        metrics = {k: finite_or_none(v) for k, v in evaluation.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        state.last_eval = {"iteration": int(iteration), "metrics": metrics}
        state.stage()


def _saved_spec(saved: dict[str, Any]) -> ObjectiveSpec:
    if "spec" in saved:
        return ObjectiveSpec.from_dict(saved["spec"])
    # coordinator.pt written before specs had versions: the config and directions, version 0
    config = saved["objective_config"]
    return ObjectiveSpec(objective_class(config["name"]).config_cls.model_validate(config), tuple(saved["directions"]))


def _saved_queue(saved: dict[str, Any]) -> Queued:
    if "queued" in saved:
        return Queued(**saved["queued"])
    return Queued(dict(saved["pending"]), dict(saved.get("pending_directions", {})), dict(saved.get("pending_objective", {})))


def restore(state: CoordinatorState, saved: dict[str, Any]) -> None:
    """Adopt persisted state (a checkpoint's, or coordinator.pt after an actor restart). The audit log's
    entries after the snapshot are replayed; values given differently at launch than when the state was
    saved (resume-time overrides) win over the saved ones, and are audited."""
    with state.transaction():
        spec = _saved_spec(saved)
        if spec.config.name == state.config.objective.name:
            state.spec = spec
            state.objective = objective_spec.build(spec, state.config.rewards)
        state.objective.load_state_dict(saved["objective"])
        state.last_committed = saved["last_committed"]
        state.running = None
        state.queued = _saved_queue(saved)
        state.controls = Controls(**saved.get("controls", {}))
        state.new_audit_list([Change(**{"seq": i, **c}) for i, c in enumerate(saved["audit"])])
        for entry in state.audit[saved.get("audit_length", len(state.audit)) :]:
            apply(state, entry)  # logged after the last snapshot: replay
        state.last_record = saved["last_record"]
        state.last_eval = saved.get("last_eval")
        if "launch" in saved:
            _apply_launch_overrides(state, Launch(**saved["launch"]))
        state.stage()


def _apply_launch_overrides(state: CoordinatorState, saved: Launch) -> None:
    now = state.launch
    patch = {k: v for k, v in now.objective.items() if saved.objective.get(k) != v and k != "name"}
    directions = {n: d for n, d in now.directions.items() if saved.directions.get(n) != d and d is not None}
    start = state.last_committed + 1
    current = state.spec.config.model_dump(mode="json")
    for key, value in patch.items():
        record(state, "launch", f"objective.{key}", current.get(key), value, start)
    for name, value in directions.items():
        record(state, "launch", f"rewards.{name}.direction", state.directions()[name], value, start)
    if patch or directions:
        _respec(state, type(state.spec.config).model_validate({**current, **patch}), directions, patch)
    for name, value in now.thresholds.items():
        if saved.thresholds.get(name) != value and isinstance(value, (int, float)) and name in state.objective.reward_names:
            old = float32_value(state.objective.thresholds[state.objective.reward_names.index(name)])
            state.objective.set_threshold(name, value)
            record(state, "launch", f"rewards.{name}.threshold", old, value, start)
