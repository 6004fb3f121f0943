"""Coordinator actor: the single owner of objective state between iterations (see services.coordination),
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
from services.config import RootConfig
from services.coordination import CoordinatorState, load_state


def _log_to_stderr() -> None:
    """INFO lines of crlhf.* reach the driver's console (Ray forwards actor stderr)."""
    logger = logging.getLogger("crlhf")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


@ray.remote
class Coordinator:
    def __init__(self, config: RootConfig, run_dir: str) -> None:
        quiet_process(1)
        _log_to_stderr()
        self.run_dir = Path(run_dir)
        self.state_path = self.run_dir / "coordinator.pt"
        self.state = CoordinatorState(config, self.state_path)
        if self.state_path.exists():  # actor restart: continue exactly where the last commit left off
            self.state.load_state_dict(load_state(self.state_path))
            self._seed_history()
            if ray.get_runtime_context().was_current_actor_reconstructed:
                self.state.telemetry.actor_restarted("coordinator")
        self.control = None
        if config.control.enabled:
            from services.control.server import start_control_plane

            advertise = ray.util.get_node_ip_address() if config.control.host in ("", "0.0.0.0", "::") else None
            self.control = start_control_plane(self.state, config.control, self.run_dir, advertise)

    # --- iteration protocol --------------------------------------------------------------------
    def begin_iteration(self, iteration: int) -> dict[str, Any]:
        return self.state.begin_iteration(iteration)

    def commit(self, iteration: int, result: dict[str, Any]) -> dict[str, Any]:
        return self.state.commit(iteration, result)

    def observe(self, record: dict[str, Any]) -> None:
        """The driver's completed record of a committed iteration: metrics only (see CoordinatorState.observe)."""
        self.state.observe(record)

    def actor_restarted(self, kind: str) -> None:
        """The driver restarted an actor of `kind`: counted in crlhf_actor_restarts_total."""
        self.state.telemetry.actor_restarted(kind)

    def record_evaluation(self, iteration: int, evaluation: dict[str, Any]) -> None:
        """Shown as the status's last_eval; call after each held-out evaluation."""
        self.state.record_evaluation(iteration, evaluation)

    # --- run controls (polled by the driver at every iteration boundary) ---------------------------
    def poll_controls(self) -> dict[str, bool]:
        """{"paused": bool, "stop": bool, "checkpoint": bool}."""
        return self.state.poll_controls()

    def ack_checkpoint(self, path: str) -> None:
        self.state.ack_checkpoint(path)

    def mark_stopped(self) -> None:
        self.state.mark_stopped()

    # --- changes (also reachable over REST) ----------------------------------------------------------
    def set_threshold(self, reward: str, value: float, who: str = "api") -> dict[str, Any]:
        return vars(self.state.set_threshold(reward, value, who))

    def status(self) -> dict[str, Any]:
        return self.state.status()

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
        self.state.load_state_dict(state)
        self.state.new_session()
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
