"""Coordinator actor: the single owner of objective state between iterations (see services.coordination)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ray

from services.actors.common import quiet_process
from services.config import RootConfig
from services.coordination import CoordinatorState, load_state


@ray.remote
class Coordinator:
    def __init__(self, config: RootConfig, run_dir: str) -> None:
        quiet_process(1)
        self.state_path = Path(run_dir) / "coordinator.pt"
        self.state = CoordinatorState(config, self.state_path)
        if self.state_path.exists():  # actor restart: continue exactly where the last commit left off
            self.state.load_state_dict(load_state(self.state_path))

    def begin_iteration(self, iteration: int) -> dict[str, Any]:
        return self.state.begin_iteration(iteration)

    def commit(self, iteration: int, result: dict[str, Any]) -> dict[str, Any]:
        return self.state.commit(iteration, result)

    def set_threshold(self, reward: str, value: float, who: str = "api") -> dict[str, Any]:
        return vars(self.state.set_threshold(reward, value, who))

    def state_dict(self) -> dict[str, Any]:
        return self.state.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.state.load_state_dict(state)
        self.state._persist()
