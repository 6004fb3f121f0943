"""CONTROL_PLANE_WIRED (harness.py) must say whether the coordinator's app serves the run's telemetry:
otherwise the slow tests would silently test a replay instead of the real control plane, or fail."""

from __future__ import annotations

from fastapi.testclient import TestClient

from services.control.app import create_app
from services.coordination import CoordinatorState
from services.overrides import build_config

from .harness import CONTROL_PLANE_WIRED


def test_the_flag_matches_the_control_plane() -> None:
    state = CoordinatorState(build_config(["preset=smoke", "objective=mu_ppo"]))
    with TestClient(create_app(state, "x" * 32)) as client:
        history = client.get("/v1/history")
        page = client.get("/live/")
        metrics = client.get("/metrics").text
    wired = history.status_code == 200 and page.status_code == 200
    assert wired == CONTROL_PLANE_WIRED, (
        "services.control.app now serves the live router: set CONTROL_PLANE_WIRED = True in tests/observability/harness.py"
        if wired else "CONTROL_PLANE_WIRED is True but create_app() serves no /v1/history or /live/: include services.control.live_router"
    )
    if wired:  # and the rest of the wiring: /metrics from the run's registry, requests counted by the middleware
        assert 'crlhf_control_requests_total{method="GET",route="/v1/history"' in metrics
        assert 'crlhf_actor_restarts_total{kind="coordinator"' in metrics
