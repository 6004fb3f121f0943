"""Coordinator actor: the single owner of objective state between iterations (see services.coordinator.state),
and the host of the REST control plane (services.control), served from a thread of this actor's process.

The FastAPI handlers call the same `CoordinatorState` as the driver's Ray calls; its lock serialises them.
The driver places this actor on the head node, so `address()` is reachable at a known host.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import ray

from services.actors.common import quiet_process
from services.config.schema import RootConfig
from services.coordinator import changes, protocol, views
from services.coordinator.state import CoordinatorState
from services.coordinator.store import load_state
from services.objectives.spec import Handout


def _warnings_to_stderr() -> None:
    """crlhf's warnings and errors reach the driver's terminal (Ray forwards actor stderr, prefixed with the
    actor's pid); its INFO lines (the control plane's address, NM-PPO's search steps) go to train.log only,
    like every other actor's: the driver already prints the address, and per-evaluation lines would break
    the progress bar."""
    logger = logging.getLogger("crlhf")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setLevel(logging.WARNING)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


@ray.remote
class Coordinator:
    def __init__(self, config: RootConfig, run_dir: str) -> None:
        quiet_process(1, redirect_output=False)
        _warnings_to_stderr()
        self.run_dir = Path(run_dir)
        self.state_path = self.run_dir / "coordinator.pt"
        self.state = CoordinatorState(config, self.state_path)
        if self.state_path.exists():  # actor restart: continue exactly where the last commit left off
            protocol.restore(self.state, load_state(self.state_path))
            self._seed_history()
            if ray.get_runtime_context().was_current_actor_reconstructed:
                self.state.telemetry.actor_restarted("coordinator")
        self.control = None
        if config.control.enabled:
            from services.control.server import start_control_plane

            advertise = ray.util.get_node_ip_address() if config.control.host in ("", "0.0.0.0", "::") else None
            self.control = start_control_plane(self.state, config.control, self.run_dir, advertise)

    # --- iteration protocol --------------------------------------------------------------------
    def begin_iteration(self, iteration: int) -> Handout:
        return protocol.begin_iteration(self.state, iteration)

    def commit(self, iteration: int, result: dict[str, Any]) -> dict[str, Any]:
        return protocol.commit(self.state, iteration, result)

    def observe(self, record: dict[str, Any]) -> None:
        """The driver's completed record of a committed iteration: metrics only (see protocol.observe)."""
        protocol.observe(self.state, record)

    def actor_restarted(self, kind: str) -> None:
        """The driver restarted an actor of `kind`: counted in crlhf_actor_restarts_total."""
        self.state.telemetry.actor_restarted(kind)

    def set_waiting(self, what: str | None) -> None:
        """The driver is waiting for actors Ray cannot place yet (`what` names them), or no longer (None):
        /v1/status then says 'waiting for resources'."""
        with self.state.transaction():
            self.state.waiting = what

    def record_evaluation(self, iteration: int, evaluation: dict[str, Any]) -> None:
        """Shown as the status's last_eval; call after each held-out evaluation."""
        protocol.record_evaluation(self.state, iteration, evaluation)

    # --- run controls (polled by the driver at every iteration boundary) ---------------------------
    def poll_controls(self) -> dict[str, bool]:
        """{"paused": bool, "stop": bool, "checkpoint": bool}."""
        return changes.poll_controls(self.state)

    def ack_checkpoint(self, path: str) -> None:
        changes.ack_checkpoint(self.state, path)

    def mark_stopped(self) -> None:
        changes.mark_stopped(self.state)

    # --- changes (also reachable over REST) ----------------------------------------------------------
    def set_threshold(self, reward: str, value: float, who: str = "api") -> dict[str, Any]:
        return vars(changes.set_threshold(self.state, reward, value, who))

    def status(self) -> dict[str, Any]:
        with self.state.lock:
            return views.status(self.state)

    def pid(self) -> int:
        """This actor's process id (benchmarks read its CPU time)."""
        return os.getpid()

    def address(self) -> str:
        """The control plane's URL ('' when control.enabled=false)."""
        return self.control.url if self.control is not None else ""

    # --- persistence ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return self.state.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from a checkpoint: adopt its state; the previous session's pause/stop/checkpoint requests
        do not carry over (a restarted actor, by contrast, reloads coordinator.pt with them in __init__)."""
        protocol.restore(self.state, state)
        changes.new_session(self.state)
        self._seed_history()

    def _seed_history(self) -> None:
        """Charts and gauges continue from metrics.jsonl (the driver trims it to the checkpoint first)."""
        path = self.run_dir / "metrics.jsonl"
        if path.exists():
            self.state.telemetry.seed_history(json.loads(line) for line in path.read_text().splitlines() if line.strip())

    def shutdown(self) -> None:
        if self.control is not None:
            self.control.stop()
            self.control = None
