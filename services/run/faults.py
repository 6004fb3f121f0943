"""Which errors mean "an actor was lost" (retry the iteration once it is back) rather than "the run is wrong"
(stop), and the bounded retry budget. Pure: no Ray calls, only Ray's exception types.

A lost rollout or reward actor is restarted by Ray (services/run/actors.py); the driver re-sends the current
weights to rollout actors and re-runs the iteration. A lost learner restarts empty, so the driver rolls the
run back to its last checkpoint. Errors raised by the run's own code (a reward that cannot score, a refused
non-finite update, bad data) are not faults to retry: re-running would fail the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

from ray import exceptions as rex

from services.actors.common import ActorStateLost

# Ray's ways of saying a process, node or object went away (not an error in the task's own code).
LOST = tuple(
    getattr(rex, name) for name in (
        "RayActorError", "ActorDiedError", "ActorUnavailableError", "ActorUnschedulableError", "WorkerCrashedError",
        "NodeDiedError", "ObjectLostError", "OwnerDiedError", "ObjectReconstructionFailedError", "LocalRayletDiedError",
        "ObjectFetchTimedOutError", "ReferenceCountingAssertionError",
    ) if hasattr(rex, name)
)


def innermost(err: BaseException) -> BaseException:
    """The original exception inside a Ray task error chain (RayTaskError.cause), else `err` itself."""
    while getattr(err, "cause", None) is not None:
        err = err.cause  # type: ignore[assignment]
    return err


def root_cause(err: BaseException) -> str:
    """The innermost message of a Ray task error chain, without Ray's traceback dump."""
    cause = getattr(err, "cause", None)
    while cause is not None and getattr(cause, "cause", None) is not None:
        cause = cause.cause
    if cause is not None:
        return f"{type(cause).__name__}: {cause}"
    return str(err).strip().splitlines()[-1]


def is_lost_actor(err: BaseException) -> bool:
    """True when `err` (or what caused it) says an actor, worker, node or object was lost."""
    seen = err
    while seen is not None:
        if isinstance(seen, LOST) or isinstance(seen, ActorStateLost):
            return True
        seen = getattr(seen, "cause", None)
    return False


@dataclass
class RetryBudget:
    """At most `max_retries` recoveries in a row; a completed iteration resets the count."""

    max_retries: int
    used: int = 0
    total: int = 0  # recoveries over the whole run (reported at the end)

    def spend(self) -> bool:
        """Take one retry; False when the budget is spent (the fault repeats: stop)."""
        if self.used >= self.max_retries:
            return False
        self.used += 1
        self.total += 1
        return True

    def succeeded(self) -> None:
        self.used = 0
