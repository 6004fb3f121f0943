"""The coordinator's state, independent of Ray: what the run's objective is (its spec) and has learned, the
changes queued for the next iteration boundary, run controls, and the audit log.

Who does what with it (a newcomer's map; docs/ARCHITECTURE.md draws the path of a REST change):
- `changes.py`  validates and queues requests (thresholds, directions, hyperparameters, controls) — the only
                writer besides the iteration protocol — and replays the audit log after a restart;
- `protocol.py` the iteration boundary: `begin_iteration` applies queued changes and hands the learner the
                spec + state, `commit` adopts what the learner returns; resume and launch overrides;
- `views.py`    read-only views for REST and the live page, published once per change as immutable
                pre-serialised snapshots;
- `store.py`    durable, atomic persistence (`coordinator.pt` + the write-ahead audit log `audit.jsonl`).

One lock serialises every writer. Writes stage a snapshot under the lock and wait for the disk after
releasing it (`transaction`), so readers never wait for the disk.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from services.config.schema import RootConfig
from services.coordinator.audit import Change
from services.coordinator.store import Snapshot, StateStore
from services.coordinator.telemetry import RunTelemetry
from services.coordinator.values import float32_value
from services.objectives import spec as objective_spec
from services.objectives.spec import ObjectiveSpec

if TYPE_CHECKING:
    from services.objectives.base import Objective


@dataclass
class Controls:
    paused: bool = False
    stop: bool = False  # requested, not yet carried out
    checkpoint: bool = False  # requested, not yet acknowledged
    stopped: bool = False  # the driver ended the run after a stop request


@dataclass
class Queued:
    """Changes accepted while an iteration may be running; they apply at the next iteration boundary."""

    thresholds: dict[str, float] = field(default_factory=dict)
    directions: dict[str, str] = field(default_factory=dict)
    objective: dict[str, Any] = field(default_factory=dict)  # hyperparameter -> value (JSON form)

    def __len__(self) -> int:
        return len(self.thresholds) + len(self.directions) + len(self.objective)


@dataclass
class Launch:
    """The launch configuration the persisted state was created under, to spot resume-time overrides."""

    objective: dict[str, Any]
    thresholds: dict[str, float | None]
    directions: dict[str, str | None]

    @classmethod
    def of(cls, config: RootConfig) -> "Launch":
        return cls(
            objective=config.objective.model_dump(mode="json"),
            thresholds={n: r.threshold for n, r in config.rewards.items()},
            directions={n: r.direction for n, r in config.rewards.items()},
        )


class CoordinatorState:
    def __init__(self, config: RootConfig, state_path: Path | None = None, run_label: str | None = None) -> None:
        """`run_label` labels the run's Prometheus series; by default the run directory's name."""
        self.config = config
        self.spec = ObjectiveSpec.at_launch(config.objective, config.rewards)
        self.objective: "Objective" = objective_spec.build(self.spec, config.rewards)
        label = run_label or (state_path.parent.name if state_path is not None else None) or config.run.name or config.objective.name
        self.telemetry = RunTelemetry(label, self.objective.reward_names, objective=config.objective.name)
        self.last_committed = -1  # iteration
        self.running: int | None = None
        self.waiting: str | None = None  # actors waiting for resources (set by the driver; not persisted)
        self.queued = Queued()
        self.controls = Controls()
        self.audit: list[Change] = []
        self.last_record: dict[str, Any] = {}
        self.last_eval: dict[str, Any] | None = None
        self.commit_times: deque[float] = deque(maxlen=11)  # wall clock of recent commits, for iterations/s
        self.started = time.time()
        self.revision = 0  # bumped by every transaction: views republish when it moves
        self.published: Any = None  # the read views of one revision (views.Published), rendered on demand
        self.launch = Launch.of(config)  # constant: the config never changes
        self.lock = threading.Lock()  # serialises REST changes against the iteration protocol
        self._store = StateStore(state_path) if state_path is not None else None
        self._version = 0  # of the last staged snapshot
        self._epoch = 0  # of the audit list
        self._staged: list[int] | None = None

    # --- derived (call under the lock) ---------------------------------------------------------
    @property
    def reward_names(self) -> list[str]:
        return list(self.objective.reward_names)

    def directions(self) -> dict[str, str]:
        return dict(zip(self.objective.reward_names, self.spec.directions))

    def thresholds(self) -> dict[str, float | None]:
        return {n: float32_value(t) for n, t in zip(self.objective.reward_names, self.objective.thresholds.tolist())}

    def constrained(self) -> list[str]:
        """Rewards that are constraints of this objective (have a threshold it uses)."""
        return self.objective.constrained_rewards()

    def next_iteration(self) -> int:
        """The first iteration a change made now applies to."""
        return (self.running if self.running is not None else self.last_committed) + 1

    # --- persistence ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The whole state, audit log included (self-contained: checkpoints store this)."""
        with self.lock:
            return {**self.core_dict(), "audit": [asdict(c) for c in self.audit]}

    def core_dict(self) -> dict[str, Any]:
        return {
            "objective": self.objective.state_dict(),
            "spec": self.spec.to_dict(),
            "launch": asdict(self.launch),
            "last_committed": self.last_committed,
            "queued": asdict(self.queued),
            "controls": asdict(self.controls),
            "last_record": self.last_record,
            "last_eval": self.last_eval,
        }

    def new_audit_list(self, entries: list[Change]) -> None:
        self.audit = entries
        self._epoch += 1  # a new audit list: the store rewrites audit.jsonl

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """The lock for a change; a snapshot staged inside is written after the lock is released, and the
        caller returns only once it is on disk (readers never wait for the disk)."""
        staged: list[int] = []
        with self.lock:
            self._staged = staged
            try:
                yield
            finally:
                self._staged = None
                self.revision += 1
        if staged and self._store is not None:
            self._store.flush(staged[-1])

    def stage(self, log_only: bool = False) -> None:
        """Stage a write (inside `transaction`): the audit log up to now, plus (unless `log_only`, for changes
        the log fully describes) a snapshot of the core state."""
        if self._store is None or self._staged is None:
            return
        self._version += 1
        core = None if log_only and self._store.has_core else self.core_dict()  # the first write is whole
        self._store.submit(Snapshot(self._version, core, len(self.audit), self.audit, len(self.audit), self._epoch))
        self._staged.append(self._version)
