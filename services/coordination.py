"""The coordinator's state, independent of Ray: objective state between iterations, threshold changes
and their audit log, persisted atomically.

Protocol per iteration: `begin_iteration(k)` applies queued changes and returns the objective state the
learner starts from; the learner returns its updated state; `commit(k, result)` adopts it and persists.
A change requested while iteration k runs therefore applies from iteration k + 1.
"""

from __future__ import annotations

import math
import os
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from services.config import RootConfig
from services.objectives.registry import build_objective, unknown_name_message


@dataclass
class Change:
    """One audited change: who asked, when, what, and the first iteration it applies to."""

    time: float
    who: str
    target: str
    old: Any
    new: Any
    applies_from: int


class ChangeError(ValueError):
    """A rejected change; the state is untouched."""


class CoordinatorState:
    def __init__(self, config: RootConfig, state_path: Path | None = None) -> None:
        self.config = config
        self.objective = build_objective(config.objective, config.rewards)
        self.last_committed = -1  # iteration
        self.running: int | None = None
        self.pending: dict[str, float] = {}
        self.audit: list[Change] = []
        self.last_record: dict[str, Any] = {}
        self.state_path = state_path
        self._lock = threading.Lock()  # serialises REST changes against the iteration protocol

    # --- iteration protocol --------------------------------------------------------------------
    def begin_iteration(self, iteration: int) -> dict[str, Any]:
        with self._lock:
            for reward, value in self.pending.items():
                self.objective.set_threshold(reward, value)
            self.pending.clear()
            self.running = iteration
            return self.objective.state_dict()

    def commit(self, iteration: int, result: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.objective.load_state_dict(result["objective_state"])
            # Changes queued while this iteration ran must survive the learner's (older) thresholds.
            self.last_committed = iteration
            self.running = None
            self.last_record = result["record"]
            self._persist()
            return self.last_record

    # --- changes ---------------------------------------------------------------------------------
    def next_iteration(self) -> int:
        return (self.running if self.running is not None else self.last_committed) + 1

    def set_threshold(self, reward: str, value: float, who: str = "api") -> Change:
        with self._lock:
            if reward not in self.objective.reward_names:
                raise ChangeError(unknown_name_message("reward", reward, self.objective.reward_names))
            if not self.config.objective.uses_thresholds:
                raise ChangeError(f"objective {self.config.objective.name} has no thresholds")
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise ChangeError(f"threshold for '{reward}' must be a finite number, got {value!r}")
            old = self.pending.get(reward, float(self.objective.thresholds[self.objective.reward_names.index(reward)]))
            self.pending[reward] = float(value)
            change = Change(time.time(), who, f"rewards.{reward}.threshold", old, float(value), self.next_iteration())
            self.audit.append(change)
            self._persist()
            return change

    # --- persistence -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "objective": self.objective.state_dict(),
            "last_committed": self.last_committed,
            "pending": dict(self.pending),
            "audit": [asdict(c) for c in self.audit],
            "last_record": self.last_record,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.objective.load_state_dict(state["objective"])
        self.last_committed = state["last_committed"]
        self.pending = dict(state["pending"])
        self.audit = [Change(**c) for c in state["audit"]]
        self.last_record = state["last_record"]

    def _persist(self) -> None:
        if self.state_path is not None:
            save_atomic(self.state_dict(), self.state_path)


def save_atomic(obj: Any, path: Path) -> None:
    """torch.save to a temporary file in the same directory, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_state(path: Path) -> dict[str, Any]:
    return torch.load(path, weights_only=False)
