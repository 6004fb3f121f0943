"""A real control plane for tests: CoordinatorState + FastAPI app + uvicorn on 127.0.0.1 (free port), in-process."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import httpx

from services.config.schema import RootConfig
from services.control.server import ControlPlane, start_control_plane
from services.coordinator.state import CoordinatorState
from services.config.overrides import build_config


@dataclass
class Live:
    url: str
    token: str
    state: CoordinatorState
    plane: ControlPlane
    run_dir: Path
    http: httpx.Client

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def smoke_config(*overrides: str) -> RootConfig:
    return build_config(["preset=smoke", "objective=mu_ppo", "control.port=0", *overrides])


def start(config: RootConfig, directory: Path) -> Live:
    state = CoordinatorState(config, directory / "coordinator.pt")
    plane = start_control_plane(state, config.control, directory)
    token = (directory / "control.token").read_text().strip()
    return Live(plane.url, token, state, plane, directory, httpx.Client(base_url=plane.url, timeout=10))


def stop(live: Live) -> None:
    live.http.close()
    live.plane.stop()
