"""The control plane serves the run's own telemetry: /metrics from the state's registry, every request
counted by route template, and the live page with its history."""

from __future__ import annotations

from fastapi.testclient import TestClient

from services.coordinator import protocol
from services.control.app import create_app
from services.coordinator.state import CoordinatorState
from services.config.overrides import build_config


def test_the_control_plane_serves_the_runs_telemetry() -> None:
    state = CoordinatorState(build_config(["preset=smoke", "objective=mu_ppo"]), run_label="wired")
    with TestClient(create_app(state, "x" * 32)) as client:
        history = client.get("/v1/history")
        page = client.get("/live/")
        metrics = client.get("/metrics").text
    assert history.status_code == 200 and history.json()["run"] == "wired"
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'crlhf_control_requests_total{method="GET",route="/v1/history",run="wired",status="200"} 1.0' in metrics
    assert 'crlhf_actor_restarts_total{kind="coordinator",run="wired"} 0.0' in metrics
    assert 'crlhf_run_info{objective="mu_ppo",run="wired"} 1.0' in metrics


def test_a_commit_reaches_the_metrics() -> None:
    state = CoordinatorState(build_config(["preset=smoke", "objective=mu_ppo"]), run_label="wired")
    handed = protocol.begin_iteration(state, 0)
    record = {"iteration": 0, "reward/meteor": 0.125, "threshold/meteor": 0.2, "violation/meteor": 0.075, "tokens": 40}
    protocol.commit(state, 0, {"objective_state": handed.state, "record": record})
    protocol.observe(state, {**record, "time/sync": 0.5})  # the driver's completed record: counted once, sync added
    text = state.telemetry.render().decode()
    assert 'crlhf_constraint_violation{reward="meteor",run="wired"} 0.075' in text
    assert 'crlhf_generated_tokens_total{run="wired"} 40.0' in text
    assert 'crlhf_iterations_total{run="wired"} 1.0' in text
    assert 'crlhf_phase_duration_seconds_count{phase="weight_sync",run="wired"} 1.0' in text
