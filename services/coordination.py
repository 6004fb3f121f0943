"""The coordinator's state, independent of Ray: objective state between iterations, queued changes (thresholds,
constraint directions, objective hyperparameters), run controls (pause/stop/checkpoint) and the audit log of
every change, persisted atomically.

Protocol per iteration: `begin_iteration(k)` applies queued changes and returns the objective state the
learner starts from; the learner returns its updated state; `commit(k, result)` adopts it and persists.
A change requested while iteration k runs therefore applies from iteration k + 1; the change's audit entry
says so (`applies_from`). One lock serialises changes, views and the iteration protocol.

Hyperparameter patches and direction changes are applied by *rebuilding* the objective from the patched
config and loading the current learned state into it: objectives derive helpers from their config in
`__init__` (the multiplier optimiser copies its lr, ConstrainedPPO its direction signs), so setting an
attribute on the config would not reach them. Fields whose value only seeds learned state (initial
multipliers, seeds) or that change the number of reward streams are refused mid-run (`change_rules`); the
KL coefficient and target, which live in the KL controller's state, are written into that state
(`kl_coef` sets the current β). The handed-out state carries the spec (`SPEC_KEY`) so the learner can rebuild
its own copy the same way: `objective_for_state`.

Telemetry: the state owns the run's `RunTelemetry` (services/telemetry.py); every committed record feeds it,
and the control plane serves it at `/metrics` and `/v1/history`.

Persistence (services/state_store.py): the audit log is also the write-ahead log, replayed by `_apply`
after a restart; `coordinator.pt` is a snapshot written at commits. Read-only views: coordination_views.py.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from services.change_rules import (
    DIRECTIONS,
    MAX_ABS_THRESHOLD,
    SCORE_RANGES,
    SPEC_KEY,
    STATE_FIELDS,
    Change,
    ChangeError,
    ConflictError,
    NotFoundError,
    check_finite,
    finite_or_none,
    float32_value,
    frozen_fields,
    has_path,
    objective_for_state,
    rewards_with_directions,
    set_path,
    validation_message,
)
from services.config import RootConfig
from services.coordination_views import CoordinatorViews
from services.objectives.registry import ObjectiveConfig, build_objective, objective_class, unknown_name_message
from services.state_store import Snapshot, StateStore, load_state, save_atomic
from services.telemetry import RunTelemetry

if TYPE_CHECKING:
    from services.objectives.base import Objective

__all__ = ["Change", "ChangeError", "ConflictError", "CoordinatorState", "NotFoundError", "SPEC_KEY", "load_state",
           "objective_for_state", "save_atomic"]


@dataclass
class Controls:
    paused: bool = False
    stop: bool = False  # requested, not yet carried out
    checkpoint: bool = False  # requested, not yet acknowledged
    stopped: bool = False  # the driver ended the run after a stop request


@dataclass
class _Launch:
    """The launch configuration the persisted state was created under, to spot resume-time overrides."""

    objective: dict[str, Any]
    thresholds: dict[str, float | None]
    directions: dict[str, str | None]


class CoordinatorState(CoordinatorViews):
    def __init__(self, config: RootConfig, state_path: Path | None = None, run_label: str | None = None) -> None:
        """`run_label` labels the run's Prometheus series; by default the run directory's name."""
        self.config = config
        self.objective = build_objective(config.objective, config.rewards)
        label = run_label or (state_path.parent.name if state_path is not None else None) or config.run.name or config.objective.name
        self.telemetry = RunTelemetry(label, self.objective.reward_names, objective=config.objective.name)
        self.last_committed = -1  # iteration
        self.running: int | None = None
        self.pending: dict[str, float] = {}  # reward -> threshold
        self.pending_directions: dict[str, str] = {}
        self.pending_objective: dict[str, Any] = {}  # hyperparameter -> value (JSON form)
        self.controls = Controls()
        self.audit: list[Change] = []
        self.last_record: dict[str, Any] = {}
        self.last_eval: dict[str, Any] | None = None
        self.commit_times: deque[float] = deque(maxlen=11)  # wall clock of recent commits, for iterations/s
        self.state_path = state_path
        self.started = time.time()
        self._lock = threading.Lock()  # serialises REST changes against the iteration protocol
        self._store = StateStore(state_path) if state_path is not None else None
        self._version = 0  # of the last staged snapshot
        self._epoch = 0  # of the audit list
        self._staged: list[int] | None = None
        self._launch_dict = asdict(self._launch())  # constant: self.config never changes

    # --- derived -------------------------------------------------------------------------------
    @property
    def objective_config(self) -> ObjectiveConfig:
        return self.objective.config

    @property
    def reward_names(self) -> list[str]:
        return list(self.objective.reward_names)

    def directions(self) -> dict[str, str]:
        return dict(zip(self.objective.reward_names, self.objective.directions))

    def thresholds(self) -> dict[str, float | None]:
        return {n: float32_value(t) for n, t in zip(self.objective.reward_names, self.objective.thresholds.tolist())}

    def constrained(self) -> list[str]:
        """Rewards that are constraints of this objective (have a threshold it uses)."""
        if not type(self.objective_config).uses_thresholds:
            return []
        names = getattr(self.objective, "constraint_names", None)
        return list(names) if names is not None else self.reward_names

    def next_iteration(self) -> int:
        return (self.running if self.running is not None else self.last_committed) + 1

    def spec(self) -> dict[str, Any]:
        return {"config": self.objective_config.model_dump(mode="json"), "directions": list(self.objective.directions)}

    # --- iteration protocol --------------------------------------------------------------------
    def begin_iteration(self, iteration: int) -> dict[str, Any]:
        with self._lock:
            if self.pending_objective or self.pending_directions:
                self.objective = self._rebuilt(self.pending_objective, self.pending_directions)
                self.pending_objective.clear()
                self.pending_directions.clear()
            for reward, value in self.pending.items():
                self.objective.set_threshold(reward, value)
            self.pending.clear()
            self.running = iteration
            self.controls.stopped = False  # a run that iterates again (e.g. resumed) is no longer stopped
            return {**self.objective.state_dict(), SPEC_KEY: self.spec()}

    def commit(self, iteration: int, result: dict[str, Any]) -> dict[str, Any]:
        with self._transaction():
            # Changes queued while this iteration ran stay queued: they survive the learner's (older) values.
            self.objective.load_state_dict(result["objective_state"])
            self.last_committed = iteration
            self.running = None
            self.last_record = result["record"]
            evals = {k: v for k, v in self.last_record.items() if k.startswith("eval/")}
            if evals:
                self.last_eval = {"iteration": iteration, "metrics": evals}
            self.commit_times.append(time.time())
            self.telemetry.observe_record(self.last_record, iteration)
            self._stage()
            return self.last_record

    def observe(self, record: dict[str, Any]) -> None:
        """The driver's completed record of a committed iteration (adds weight-sync time, wall time and the
        evaluation, which the learner's record cannot know): metrics and history only, no state change."""
        self.telemetry.observe_record(record)

    def record_evaluation(self, iteration: int, evaluation: dict[str, Any]) -> None:
        """A held-out evaluation of the policy entering `iteration` (the driver evaluates before the update)."""
        with self._transaction():
            metrics = {k: finite_or_none(v) for k, v in evaluation.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            self.last_eval = {"iteration": int(iteration), "metrics": metrics}
            self._stage()

    def _rebuilt(self, patch: dict[str, Any], directions: dict[str, str]) -> "Objective":
        """A new objective from the patched config/directions, carrying the current learned state."""
        config = self._patched_config(patch)
        state = self.objective.state_dict()
        for key, value in patch.items():
            path = STATE_FIELDS.get(key)
            if path is not None and has_path(state, path):
                set_path(state, path, value)
        objective = build_objective(config, rewards_with_directions(self.config.rewards, {**self.directions(), **directions}))
        objective.load_state_dict(state)
        return objective

    def _patched_config(self, patch: dict[str, Any]) -> ObjectiveConfig:
        cls = type(self.objective_config)
        return cls.model_validate({**self.objective_config.model_dump(), **patch})

    # --- changes ---------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self.controls.stopped:
            raise ConflictError("the run has stopped; changes are no longer accepted (resume the run to change it)")

    def _record(self, who: str, target: str, old: Any, new: Any, applies_from: int | None = None) -> Change:
        start = self.next_iteration() if applies_from is None else applies_from
        change = Change(time.time(), who, target, old, new, start, len(self.audit))
        self.audit.append(change)
        return change

    def _change(self, who: str, target: str, old: Any, new: Any, applies_from: int | None = None) -> Change:
        """Audit one change and apply it with `_apply`, the same code that replays the log after a restart."""
        change = self._record(who, target, old, new, applies_from)
        self._apply(change)
        return change

    def _apply(self, change: Change) -> None:
        """The effect of an audited change on the queued state (the audit log is the write-ahead log)."""
        target, new = change.target, change.new
        kind, _, rest = target.partition(".")
        if kind == "rewards":
            reward, _, what = rest.rpartition(".")
            (self.pending if what == "threshold" else self.pending_directions)[reward] = new
        elif kind == "objective":
            self.pending_objective[rest] = new
        elif target in ("control.paused", "control.stop", "control.checkpoint"):
            setattr(self.controls, rest, bool(new))
        elif target == "checkpoint":
            self.controls.checkpoint = False
        elif target == "run.stopped":
            self.controls.stop, self.controls.stopped = False, True

    def _require_reward(self, reward: str) -> None:
        if reward not in self.objective.reward_names:
            raise NotFoundError(unknown_name_message("reward", reward, self.reward_names))

    def _require_constraint(self, reward: str) -> None:
        self._require_reward(reward)
        name = self.objective_config.name
        if not type(self.objective_config).uses_thresholds:
            raise ConflictError(f"objective {name} has no thresholds (its rewards are not constraints)")
        if reward not in self.constrained():
            raise ConflictError(
                f"reward '{reward}' is not a constraint of objective {name} (constraints: {', '.join(self.constrained())})"
            )

    def _check_threshold(self, reward: str, value: Any) -> float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ChangeError(f"threshold for '{reward}' must be a number, got {type(value).__name__}")
        if not math.isfinite(value):
            raise ChangeError(f"threshold for '{reward}' must be a finite number, got {value!r}")
        kind = self.config.rewards[reward].kind
        low, high = SCORE_RANGES.get(kind, (-MAX_ABS_THRESHOLD, MAX_ABS_THRESHOLD))
        if not low <= value <= high:
            raise ChangeError(f"threshold {value!r} for '{reward}' is out of range: {kind} scores lie in [{low:g}, {high:g}]")
        return float(value)

    def set_threshold(self, reward: str, value: float, who: str = "api") -> Change:
        return self.update_constraint(reward, threshold=value, who=who)[0]

    def set_direction(self, reward: str, direction: str, who: str = "api") -> Change:
        return self.update_constraint(reward, direction=direction, who=who)[0]

    def update_constraint(
        self, reward: str, threshold: float | None = None, direction: str | None = None, who: str = "api"
    ) -> list[Change]:
        """Threshold and/or direction of one constraint: both are validated before either is queued."""
        if threshold is None and direction is None:
            raise ChangeError("give a threshold, a direction, or both")
        with self._transaction():
            self._require_constraint(reward)
            if threshold is not None:
                threshold = self._check_threshold(reward, threshold)
            if direction is not None:
                self._check_direction(reward, direction)
            self._check_open()
            changes = []
            if direction is not None:
                old = self.pending_directions.get(reward, self.directions()[reward])
                changes.append(self._change(who, f"rewards.{reward}.direction", old, direction))
            if threshold is not None:
                index = self.objective.reward_names.index(reward)
                old = self.pending.get(reward, float32_value(self.objective.thresholds[index]))
                changes.append(self._change(who, f"rewards.{reward}.threshold", old, threshold))
            self._stage(log_only=True)
            return changes

    def _check_direction(self, reward: str, direction: Any) -> None:
        if type(self.objective_config).constraint_direction is None:
            raise ConflictError(f"objective {self.objective_config.name} has no constraint directions (its penalty is two-sided)")
        if direction not in DIRECTIONS:
            raise ChangeError(f"direction for '{reward}' must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
        effective = {**self.directions(), **self.pending_directions, reward: direction}
        try:
            self._patched_config(self.pending_objective).validate_rewards(rewards_with_directions(self.config.rewards, effective))
        except ValueError as err:
            raise ChangeError(str(err)) from None

    def patch_objective(self, values: dict[str, Any], who: str = "api") -> list[Change]:
        """Queue new hyperparameter values, validated by the objective's own config model (merged, strict)."""
        if not isinstance(values, dict) or not values:
            raise ChangeError("give at least one hyperparameter to change, e.g. {\"multiplier_lr\": 0.05}")
        with self._transaction():
            name = self.objective_config.name
            cls = type(self.objective_config)
            fields = [f for f in cls.model_fields if f != "name"]
            for key, value in values.items():
                if key == "name":
                    raise ConflictError("the objective cannot change mid-run; start a new run with objective=NAME")
                if key not in cls.model_fields:
                    raise ChangeError(unknown_name_message(f"{name} hyperparameter", key, fields))
                frozen = frozen_fields(name)
                if key in frozen:
                    raise ConflictError(f"objective.{key} {frozen[key]}; it cannot change mid-run")
                check_finite(key, value)
            merged = {**self.objective_config.model_dump(mode="json"), **self.pending_objective, **values}
            try:
                config = cls.model_validate(merged, strict=True)  # no "0.1" -> 0.1, no true -> 1
                config.validate_rewards(rewards_with_directions(self.config.rewards, {**self.directions(), **self.pending_directions}))
            except ValidationError as err:
                raise ChangeError(validation_message(f"objective {name}", err)) from None
            except ValueError as err:
                raise ChangeError(str(err)) from None
            self._check_open()
            effective = {**self.objective_config.model_dump(mode="json"), **self.pending_objective}
            dumped = config.model_dump(mode="json")
            changes = [self._change(who, f"objective.{key}", effective[key], dumped[key]) for key in values]
            self._stage(log_only=True)
            return changes

    # --- run controls (the driver polls at every iteration boundary) -----------------------------
    def request(self, action: str, who: str = "api") -> tuple[Change | None, dict[str, bool]]:
        """pause | resume | stop | checkpoint. Idempotent: a request that changes nothing is not audited."""
        with self._transaction():
            self._check_open()
            c = self.controls
            change = None
            if action == "pause" and not c.paused:
                change = self._change(who, "control.paused", False, True)
            elif action == "resume" and c.paused:
                change = self._change(who, "control.paused", True, False)
            elif action == "stop" and not c.stop:
                change = self._change(who, "control.stop", False, True)
            elif action == "checkpoint" and not c.checkpoint:
                change = self._change(who, "control.checkpoint", False, True)
            elif action not in ("pause", "resume", "stop", "checkpoint"):
                raise NotFoundError(unknown_name_message("action", action, ["pause", "resume", "stop", "checkpoint"]))
            if change is not None:
                self._stage(log_only=True)
            return change, self._poll()

    def _poll(self) -> dict[str, bool]:
        return {"paused": self.controls.paused, "stop": self.controls.stop, "checkpoint": self.controls.checkpoint}

    def poll_controls(self) -> dict[str, bool]:
        with self._lock:
            return self._poll()

    def ack_checkpoint(self, path: str) -> None:
        """The driver saved a checkpoint: clear the request (if any) and audit where it went."""
        with self._transaction():
            self._change("driver", "checkpoint", None, str(path), self.last_committed + 1)
            self._stage(log_only=True)

    def mark_stopped(self) -> None:
        """The driver ended the run after a stop request."""
        with self._transaction():
            self._change("driver", "run.stopped", False, True, self.last_committed + 1)
            self._stage(log_only=True)

    def new_session(self) -> None:
        """Resuming from a checkpoint: one-shot requests and pause of the previous session do not carry over."""
        with self._transaction():
            c = self.controls
            for target, value in (("control.paused", c.paused), ("control.stop", c.stop), ("control.checkpoint", c.checkpoint)):
                if value:
                    self._change("resume", target, True, False, self.last_committed + 1)
            self.controls = Controls()
            self._stage()

    # --- persistence -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The whole state, audit log included (self-contained: checkpoints store this)."""
        with self._lock:
            return {**self._core_dict(), "audit": [asdict(c) for c in self.audit]}

    def _core_dict(self) -> dict[str, Any]:
        return {
            "objective": self.objective.state_dict(),
            "objective_config": self.objective_config.model_dump(mode="json"),
            "directions": list(self.objective.directions),
            "launch": self._launch_dict,
            "last_committed": self.last_committed,
            "pending": dict(self.pending),
            "pending_directions": dict(self.pending_directions),
            "pending_objective": dict(self.pending_objective),
            "controls": asdict(self.controls),
            "last_record": self.last_record,
            "last_eval": self.last_eval,
        }

    def _launch(self) -> _Launch:
        return _Launch(
            objective=self.config.objective.model_dump(mode="json"),
            thresholds={n: r.threshold for n, r in self.config.rewards.items()},
            directions={n: r.direction for n, r in self.config.rewards.items()},
        )

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Adopt persisted state. Values given differently at launch than when the state was saved (resume-time
        overrides) win over the saved ones, and are audited."""
        with self._transaction():
            saved_config = state.get("objective_config")
            directions = state.get("directions")
            if saved_config is not None and saved_config.get("name") == self.config.objective.name:
                config = objective_class(saved_config["name"]).config_cls.model_validate(saved_config)
                named = dict(zip(self.config.rewards, directions)) if directions else {}
                self.objective = build_objective(config, rewards_with_directions(self.config.rewards, named))
            self.objective.load_state_dict(state["objective"])
            self.last_committed = state["last_committed"]
            self.running = None
            self.pending = dict(state["pending"])
            self.pending_directions = dict(state.get("pending_directions", {}))
            self.pending_objective = dict(state.get("pending_objective", {}))
            self.controls = Controls(**state.get("controls", {}))
            self.audit = [Change(**{"seq": i, **c}) for i, c in enumerate(state["audit"])]
            self._epoch += 1  # a new audit list: the store rewrites audit.jsonl
            for change in self.audit[state.get("audit_length", len(self.audit)) :]:
                self._apply(change)  # logged after the last snapshot: replay
            self.last_record = state["last_record"]
            self.last_eval = state.get("last_eval")
            if "launch" in state:
                self._apply_launch_overrides(_Launch(**state["launch"]))
            self._stage()

    def _apply_launch_overrides(self, saved: _Launch) -> None:
        now = self._launch()
        patch = {k: v for k, v in now.objective.items() if saved.objective.get(k) != v and k != "name"}
        directions = {n: d for n, d in now.directions.items() if saved.directions.get(n) != d and d is not None}
        start = self.last_committed + 1
        current = self.objective_config.model_dump(mode="json")
        for key, value in patch.items():
            self._record("launch", f"objective.{key}", current.get(key), value, start)
        for name, value in directions.items():
            self._record("launch", f"rewards.{name}.direction", self.directions()[name], value, start)
        if patch or directions:
            self.objective = self._rebuilt(patch, directions)
        for name, value in now.thresholds.items():
            if saved.thresholds.get(name) != value and value is not None and name in self.objective.reward_names:
                old = float32_value(self.objective.thresholds[self.objective.reward_names.index(name)])
                self.objective.set_threshold(name, value)
                self._record("launch", f"rewards.{name}.threshold", old, value, start)

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """The state's lock for a change; a snapshot staged inside is written after the lock is released, and
        the caller returns only once it is on disk (readers never wait for the disk)."""
        staged: list[int] = []
        with self._lock:
            self._staged = staged
            try:
                yield
            finally:
                self._staged = None
        if staged and self._store is not None:
            self._store.flush(staged[-1])

    def _stage(self, log_only: bool = False) -> None:
        """Stage a write: the audit log up to now, plus (unless `log_only`, for changes the log fully describes)
        a snapshot of the core state."""
        if self._store is None or self._staged is None:
            return
        self._version += 1
        core = None if log_only and self._store.has_core else self._core_dict()  # the first write is whole
        self._store.submit(Snapshot(self._version, core, len(self.audit), self.audit, len(self.audit), self._epoch))
        self._staged.append(self._version)
