"""Request and response models of the control plane (/v1). Pure pydantic: the client imports them too.

Requests are strict (no "0.25" for 0.25, no true for 1) and refuse NaN/inf and unknown fields.
Response floats are finite or null.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.rewards.config import Direction  # the owner's rule: one definition of a constraint direction

RunState = Literal["running", "paused", "stopping", "stopped", "waiting for resources"]


class StrictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


class ConstraintUpdate(StrictRequest):
    """New threshold and/or direction of one constraint; applies from the next iteration boundary."""

    threshold: float | None = Field(None, description="New threshold θ (finite, within the reward's score range).", examples=[0.25])
    direction: Direction | None = Field(None, description="ge: r ≥ θ, le: r ≤ θ, eq: r = θ (as the objective allows).")

    @model_validator(mode="after")
    def _something(self) -> "ConstraintUpdate":
        if self.threshold is None and self.direction is None:
            raise ValueError("give a threshold, a direction, or both")
        return self


class Response(BaseModel):
    model_config = ConfigDict(extra="ignore")  # a client tolerates fields added by a newer server


class ErrorBody(Response):
    detail: str = Field(description="What was wrong with the request, naming the field or value.")


class Health(Response):
    status: Literal["ok"] = "ok"
    iteration: int = Field(description="Last committed iteration (-1 before the first).")


class Throughput(Response):
    tokens_per_second: float | None = Field(description="Generated tokens per second of rollout in the last iteration.")
    seconds_per_iteration: float | None = Field(description="Mean wall time between the last (up to 10) commits.")


class LastEval(Response):
    iteration: int
    metrics: dict[str, float | None]


class Status(Response):
    objective: str
    state: RunState
    iteration: int = Field(description="Last committed iteration (-1 before the first).")
    running_iteration: int | None = Field(description="Iteration in progress, if any.")
    next_iteration: int = Field(description="First iteration a change made now applies to.")
    paused: bool
    stop_requested: bool
    checkpoint_requested: bool
    stopped: bool
    throughput: Throughput
    last_eval: LastEval | None = Field(description="Latest held-out evaluation; null until the run has evaluated.")
    pending_changes: int = Field(description="Queued changes that apply at the next iteration boundary.")
    audit_entries: int
    uptime_seconds: float


class PendingConstraint(Response):
    threshold: float | None = None
    direction: Direction | None = None
    applies_from: int


class Constraint(Response):
    name: str
    kind: str = Field(description="Reward function kind.")
    constrained: bool = Field(description="Whether the objective treats this reward as a constraint.")
    threshold: float | None
    direction: Direction | None
    current: float | None = Field(description="Mean reward of the last committed iteration.")
    violation: float | None = Field(description="Distance on the wrong side of θ (0 when satisfied).")
    multiplier: float | None = Field(description="Lagrange multiplier (squashed), when the objective learns one.")
    weight: float | None = Field(description="Reward weight (fixed α or learned w), when the objective uses one.")
    measured_at: int | None = Field(description="Iteration `current`/`violation` come from.")
    pending: PendingConstraint | None


class AuditEntry(Response):
    seq: int = Field(description="Position in the audit log.")
    time: float = Field(description="Unix time of the change.")
    who: str
    target: str = Field(description="What changed, e.g. rewards.meteor.threshold, objective.multiplier_lr, control.paused.")
    old: Any
    new: Any
    applies_from: int = Field(description="First iteration the change applies to.")


class ConstraintChange(Response):
    applies_from: int
    changes: list[AuditEntry]
    constraint: Constraint


class ObjectiveView(Response):
    name: str
    hyperparameters: dict[str, Any] = Field(description="Values in effect for the current/next iteration (before pending).")
    pending: dict[str, Any] = Field(description="Queued values, applied at the next iteration boundary.")
    version: int = Field(description="Version of the objective's spec: grows by one whenever a hyperparameter or direction change takes effect.")
    applies_from: int | None
    frozen: dict[str, str] = Field(description="Hyperparameters that cannot change mid-run, with the reason.")
    descriptions: dict[str, str]
    state: dict[str, float | None] = Field(description="Scalar statistics of the objective's learned state.")


class ObjectiveChange(Response):
    applies_from: int
    changes: list[AuditEntry]
    objective: ObjectiveView


class Controls(Response):
    paused: bool
    stop: bool
    checkpoint: bool


class ControlResult(Response):
    action: Literal["pause", "resume", "stop", "checkpoint"]
    changed: bool = Field(description="False when the run already was in the requested state (nothing audited).")
    applies_from: int = Field(description="The iteration boundary at which the driver acts on it.")
    controls: Controls


class NelderMeadBest(Response):
    thresholds: list[float]
    f: float


class NelderMeadView(Response):
    phase: str
    iteration: int
    simplex: list[list[float]]
    values: list[float | None]
    pending: list[float] | None
    best: NelderMeadBest | None
    total_iterations: int
    history: list[dict[str, Any]] = Field(description="Every answered proposal (the search's own record).")
    target: list[float] | None = Field(None, description="θ the run currently trains towards.")
    converged: bool | None = None
    windows: list[dict[str, Any]] | None = Field(
        None, description="Closed evaluation windows, operator overrides included (nm_ppo's history).")
