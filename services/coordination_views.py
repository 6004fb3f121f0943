"""Read side of the coordinator's state: JSON-safe views for the control plane (status, constraints,
objective, Nelder–Mead search, audit log). Each takes the state's lock briefly and never waits for the disk.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from services.change_rules import ConflictError, NotFoundError, finite_or_none, float32_value, frozen_fields, json_safe

if TYPE_CHECKING:
    from services.coordination import CoordinatorState


class CoordinatorViews:
    """Mixed into CoordinatorState; every method reads under its lock."""

    def status(self: "CoordinatorState") -> dict[str, Any]:
        with self._lock:
            record = self.last_record
            c = self.controls
            times = list(self.commit_times)
            seconds_per_iteration = (times[-1] - times[0]) / (len(times) - 1) if len(times) > 1 else None
            state = "stopped" if c.stopped else "stopping" if c.stop else "paused" if c.paused else "running"
            return {
                "objective": self.objective_config.name,
                "state": state,
                "iteration": self.last_committed,
                "running_iteration": self.running,
                "next_iteration": self.next_iteration(),
                "paused": c.paused,
                "stop_requested": c.stop,
                "checkpoint_requested": c.checkpoint,
                "stopped": c.stopped,
                "throughput": {
                    "tokens_per_second": finite_or_none(record.get("tokens_per_second")),
                    "seconds_per_iteration": finite_or_none(seconds_per_iteration),
                },
                "last_eval": None if self.last_eval is None else json_safe(self.last_eval),
                "pending_changes": len(self.pending) + len(self.pending_directions) + len(self.pending_objective),
                "audit_entries": len(self.audit),
                "uptime_seconds": time.time() - self.started,
            }

    def constraints(self: "CoordinatorState") -> list[dict[str, Any]]:
        with self._lock:
            metrics = self._objective_metrics()
            return [self._constraint_view(name, metrics) for name in self.reward_names]

    def constraint(self: "CoordinatorState", reward: str) -> dict[str, Any]:
        with self._lock:
            self._require_reward(reward)
            return self._constraint_view(reward, self._objective_metrics())

    def _constraint_view(self: "CoordinatorState", name: str, metrics: dict[str, float]) -> dict[str, Any]:
        i = self.objective.reward_names.index(name)
        constrained = name in self.constrained()
        record = self.last_record
        multiplier = metrics.get(f"multiplier/{name}")
        weight = metrics.get(f"weight/{name}")
        if weight is None and multiplier is None:
            weight = float(self.objective.weights[i])  # fixed weight α of a composite reward
        has_direction = constrained and type(self.objective_config).constraint_direction is not None
        pending: dict[str, Any] = {}
        if name in self.pending:
            pending["threshold"] = self.pending[name]
        if name in self.pending_directions:
            pending["direction"] = self.pending_directions[name]
        return {
            "name": name,
            "kind": self.config.rewards[name].kind,
            "constrained": constrained,
            "threshold": float32_value(self.objective.thresholds[i]) if constrained else None,
            "direction": self.objective.directions[i] if has_direction else None,
            "current": finite_or_none(record.get(f"reward/{name}")),
            "violation": finite_or_none(record.get(f"violation/{name}")) if constrained else None,
            "multiplier": finite_or_none(multiplier),
            "weight": finite_or_none(weight),
            "measured_at": self.last_committed if record else None,
            "pending": ({**pending, "applies_from": self.next_iteration()} if pending else None),
        }

    def _objective_metrics(self: "CoordinatorState") -> dict[str, float]:
        try:
            return dict(self.objective.metrics())
        except (ValueError, RuntimeError):  # e.g. l3m before its schedule length is known
            return {}

    def objective_view(self: "CoordinatorState") -> dict[str, Any]:
        with self._lock:
            cls = type(self.objective_config)
            cls_name = self.objective_config.name
            return {
                "name": cls_name,
                "hyperparameters": self.objective_config.model_dump(mode="json"),
                "pending": dict(self.pending_objective),
                "applies_from": self.next_iteration() if self.pending_objective else None,
                "frozen": {k: v for k, v in frozen_fields(cls_name).items() if k in cls.model_fields}
                | {"name": "is the run's objective"},
                "descriptions": {k: f.description or "" for k, f in cls.model_fields.items()},
                "state": {k: finite_or_none(v) for k, v in self._objective_metrics().items()},
            }

    def nelder_mead_view(self: "CoordinatorState") -> dict[str, Any]:
        with self._lock:
            search = getattr(self.objective, "nelder_mead", None)  # nm_ppo owns its search
            name = self.objective_config.name
            if search is None and hasattr(self.objective, "nelder_mead"):
                raise ConflictError(f"the Nelder–Mead search of {name} starts at the first held-out evaluation (evaluation.every)")
            if search is None:
                raise NotFoundError(f"objective {name} runs no Nelder–Mead search (only nm_ppo does)")
            state = search.state_dict()
            try:
                best_theta, best_f = search.best()
                best = {"thresholds": [float(v) for v in best_theta], "f": float(best_f)}
            except RuntimeError:  # nothing scored yet
                best = None
            return json_safe({
                "phase": state["phase"],
                "iteration": state["iteration"],
                "simplex": state["simplex"],
                "values": state["values"],
                "pending": state["pending"],
                "best": best,
                "total_iterations": search.total_iterations,
                "history": state["history"],
                "target": getattr(self.objective, "target", None),
                "converged": getattr(self.objective, "converged", None),
                "windows": getattr(self.objective, "history", None),
            })

    def audit_view(self: "CoordinatorState", since: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        with self._lock:
            entries = self.audit[since:]
            if limit is not None:
                entries = entries[-limit:] if limit else []
            return [json_safe(asdict(c)) for c in entries]
