"""The control plane over real HTTP: a uvicorn server on 127.0.0.1 in front of a CoordinatorState."""

from __future__ import annotations

import logging
import os
import stat

import httpx
import pytest

from services.coordinator import changes, protocol
from services.control.auth import TOKEN_ENV

from .live import Live
from coordinator.test_state_changes import commit_from, snapshot

CHANGES = [
    ("PUT", "/v1/constraints/meteor", {"threshold": 0.3}),
    ("PATCH", "/v1/objective", {"multiplier_lr": 0.05}),
    ("POST", "/v1/pause", None),
    ("POST", "/v1/resume", None),
    ("POST", "/v1/stop", None),
    ("POST", "/v1/checkpoint", None),
]


def call(live: Live, method: str, path: str, body=None, headers=None) -> httpx.Response:
    return live.http.request(method, path, json=body, headers=headers)


# --- auth ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("method", "path", "body"), CHANGES)
@pytest.mark.parametrize(
    ("header", "detail"),
    [
        (None, "missing bearer token"),
        ("Basic dXNlcjpwYXNz", "malformed Authorization header"),
        ("Bearer", "malformed Authorization header"),
        ("Bearer not-the-token-at-all-0000", "invalid bearer token"),
    ],
)
def test_changes_need_the_right_token(shared_live, method, path, body, header, detail):
    live = shared_live
    before = snapshot(live.state)
    headers = {} if header is None else {"Authorization": header}
    r = call(live, method, path, body, headers)
    assert r.status_code == 401 and detail in r.json()["detail"]
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert snapshot(live.state) == before


@pytest.mark.parametrize(("method", "path", "body"), CHANGES)
def test_right_token_is_accepted_and_audited(live, method, path, body):
    r = call(live, method, path, body, {**live.auth, "X-Crlhf-User": "alice"})
    assert r.status_code == 202, r.text
    assert r.json()["applies_from"] == 0
    entries = live.http.get("/v1/audit").json()
    if method != "POST" or path != "/v1/resume":  # resuming a running run changes nothing: not audited
        assert entries and entries[-1]["who"] == "alice@127.0.0.1"


def test_reads_need_no_token(shared_live):
    live = shared_live
    for path in ("/v1/health", "/v1/status", "/v1/constraints", "/v1/constraints/topic", "/v1/objective", "/v1/audit", "/metrics", "/docs"):
        assert live.http.get(path).status_code == 200, path


def test_token_file_is_owner_only_and_the_token_never_reaches_logs(start_live, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    live = start_live()
    mode = stat.S_IMODE(os.stat(live.run_dir / "control.token").st_mode)
    assert mode == 0o600
    assert live.http.get("/v1/status").status_code == 200
    call(live, "PUT", "/v1/constraints/meteor", {"threshold": 0.3}, live.auth)
    call(live, "PUT", "/v1/constraints/meteor", {"threshold": 0.3}, {"Authorization": f"Bearer {live.token}x"})
    assert any("control plane listening on" in r.getMessage() for r in caplog.records)
    captured = capfd.readouterr()
    logged = "\n".join(r.getMessage() for r in caplog.records) + captured.out + captured.err
    assert live.token not in logged
    assert live.token not in (live.run_dir / "control.json").read_text()


def test_token_from_the_environment_is_used(start_live, monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, "env-token-0123456789abcdef")
    live = start_live()
    assert live.token == "env-token-0123456789abcdef"
    assert call(live, "POST", "/v1/pause", None, live.auth).status_code == 202


def test_token_from_config_is_used_and_not_serialised(start_live):
    live = start_live("control.token=config-token-0123456789")
    assert live.token == "config-token-0123456789"
    assert "token" not in live.state.config.model_dump(mode="json")["control"]


def test_address_file_and_openapi(live):
    import json

    assert json.loads((live.run_dir / "control.json").read_text())["url"] == live.url
    doc = live.http.get("/openapi.json").json()
    assert "HTTPBearer" in doc["components"]["securitySchemes"]
    assert {"/v1/status", "/v1/constraints/{name}", "/v1/objective", "/v1/audit", "/v1/nelder-mead", "/metrics"} <= set(doc["paths"])


# --- validation -----------------------------------------------------------------------------------------
RAW = {"Content-Type": "application/json"}


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "words"),
    [
        ("PUT", "/v1/constraints/metor", {"threshold": 0.2}, 404, ["unknown reward 'metor'", "did you mean 'meteor'"]),
        ("GET", "/v1/constraints/metor", None, 404, ["unknown reward 'metor'"]),
        ("PUT", "/v1/constraints/meteor", b'{"threshold": NaN}', 422, ["threshold", "finite"]),
        ("PUT", "/v1/constraints/meteor", b'{"threshold": Infinity}', 422, ["threshold", "finite"]),
        ("PUT", "/v1/constraints/meteor", b'{"threshold": -Infinity}', 422, ["threshold", "finite"]),
        ("PUT", "/v1/constraints/meteor", {"threshold": 1.5}, 422, ["out of range", "[0, 1]"]),
        ("PUT", "/v1/constraints/meteor", {"threshold": "0.2"}, 422, ["threshold", "valid number"]),
        ("PUT", "/v1/constraints/meteor", {"threshold": True}, 422, ["threshold", "valid number"]),
        ("PUT", "/v1/constraints/meteor", {"threshold": [0.2]}, 422, ["threshold"]),
        ("PUT", "/v1/constraints/meteor", {"direction": "gt"}, 422, ["direction"]),
        ("PUT", "/v1/constraints/meteor", {"direction": "eq"}, 422, ["mu_ppo supports constraint direction ge/le"]),
        ("PUT", "/v1/constraints/meteor", {"threshold": 0.2, "weight": 3}, 422, ["weight: unknown field"]),
        ("PUT", "/v1/constraints/meteor", {}, 422, ["give a threshold, a direction, or both"]),
        ("PUT", "/v1/constraints/meteor", b'{"threshold": 0.2', 422, ["not valid JSON"]),
        ("PUT", "/v1/constraints/meteor", b"[0.2]", 422, ["request body"]),
        ("PATCH", "/v1/objective", {"lagrange_lr": 0.05}, 422, ["unknown mu_ppo hyperparameter 'lagrange_lr'"]),
        ("PATCH", "/v1/objective", {"multiplier_lr": 0}, 422, ["multiplier_lr", "greater than 0"]),
        ("PATCH", "/v1/objective", {"multiplier_momentum": 1.5}, 422, ["multiplier_momentum", "less than 1"]),
        ("PATCH", "/v1/objective", {"multiplier_lr": "fast"}, 422, ["multiplier_lr", "valid number"]),
        ("PATCH", "/v1/objective", b'{"multiplier_lr": NaN}', 422, ["multiplier_lr", "finite"]),
        ("PATCH", "/v1/objective", b'{"kl_coef": Infinity}', 422, ["kl_coef", "finite"]),
        ("PATCH", "/v1/objective", {"seed": 3}, 409, ["objective.seed", "cannot change mid-run"]),
        ("PATCH", "/v1/objective", {"name": "ppo"}, 409, ["objective cannot change mid-run"]),
        ("PATCH", "/v1/objective", {}, 422, ["at least one"]),
        ("PATCH", "/v1/objective", [1, 2], 422, ["request body", "dictionary"]),
        ("GET", "/v1/audit?since=-1", None, 422, ["since", "greater than or equal to 0"]),
        ("GET", "/v1/audit?limit=many", None, 422, ["limit"]),
        ("GET", "/v1/nelder-mead", None, 404, ["runs no Nelder–Mead search"]),
    ],
)
def test_bad_input_gets_a_4xx_naming_the_problem_and_changes_nothing(shared_live, method, path, body, status, words):
    live = shared_live
    changes.set_threshold(live.state, "topic", 0.5)  # queued state that must survive
    before = snapshot(live.state)
    if isinstance(body, bytes):
        r = live.http.request(method, path, content=body, headers={**live.auth, **RAW})
    else:
        r = call(live, method, path, body, live.auth)
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str)
    for word in words:
        assert word in detail
    assert "Traceback" not in r.text
    assert snapshot(live.state) == before


def test_threshold_on_an_objective_without_thresholds_is_a_conflict(start_live):
    live = start_live("objective=ppo")
    before = snapshot(live.state)
    r = call(live, "PUT", "/v1/constraints/meteor", {"threshold": 0.2}, live.auth)
    assert r.status_code == 409 and "objective ppo has no thresholds" in r.json()["detail"]
    assert snapshot(live.state) == before
    listed = live.http.get("/v1/constraints").json()
    assert [c["constrained"] for c in listed] == [False, False] and listed[0]["weight"] == 0.5


# --- semantics --------------------------------------------------------------------------------------------
def test_change_during_an_iteration_applies_from_the_next_one(live):
    handed = protocol.begin_iteration(live.state, 4)
    r = call(live, "PUT", "/v1/constraints/meteor", {"threshold": 0.1, "direction": "le"}, live.auth)
    assert r.status_code == 202
    body = r.json()
    assert body["applies_from"] == 5
    assert [(c["target"], c["old"], c["new"]) for c in body["changes"]] == [
        ("rewards.meteor.direction", "ge", "le"), ("rewards.meteor.threshold", 0.23, 0.1)]
    assert body["constraint"]["threshold"] == 0.23 and body["constraint"]["pending"] == {"threshold": 0.1, "direction": "le", "applies_from": 5}
    status = live.http.get("/v1/status").json()
    assert status["running_iteration"] == 4 and status["next_iteration"] == 5 and status["pending_changes"] == 2
    commit_from(live.state, 4, handed, {"iteration": 4, "reward/meteor": 0.05, "violation/meteor": 0.18, "tokens_per_second": 120.0})
    assert live.http.get("/v1/constraints/meteor").json()["threshold"] == 0.23  # not before the boundary
    protocol.begin_iteration(live.state, 5)
    meteor = live.http.get("/v1/constraints/meteor").json()
    assert (meteor["threshold"], meteor["direction"], meteor["pending"]) == (0.1, "le", None)
    assert meteor["current"] == 0.05 and meteor["measured_at"] == 4
    assert live.http.get("/v1/status").json()["throughput"]["tokens_per_second"] == 120.0


def test_objective_patch_over_http(live):
    r = call(live, "PATCH", "/v1/objective", {"multiplier_lr": 0.05, "fixed_multipliers": True}, live.auth)
    assert r.status_code == 202
    assert r.json()["objective"]["pending"] == {"multiplier_lr": 0.05, "fixed_multipliers": True}
    protocol.begin_iteration(live.state, 0)
    view = live.http.get("/v1/objective").json()
    assert view["hyperparameters"]["multiplier_lr"] == 0.05 and view["pending"] == {}
    assert "seed" in view["frozen"]


def test_pause_stop_and_the_driver_protocol(live):
    assert call(live, "POST", "/v1/pause", None, live.auth).json()["controls"]["paused"] is True
    again = call(live, "POST", "/v1/pause", None, live.auth).json()
    assert again["changed"] is False
    assert changes.poll_controls(live.state) == {"paused": True, "stop": False, "checkpoint": False}
    assert live.http.get("/v1/status").json()["state"] == "paused"
    call(live, "POST", "/v1/checkpoint", None, live.auth)
    changes.ack_checkpoint(live.state, "/tmp/ckpt")
    call(live, "POST", "/v1/stop", None, live.auth)
    assert changes.poll_controls(live.state)["stop"] is True
    changes.mark_stopped(live.state)
    assert live.http.get("/v1/status").json()["state"] == "stopped"
    r = call(live, "PUT", "/v1/constraints/meteor", {"threshold": 0.3}, live.auth)
    assert r.status_code == 409 and "the run has stopped" in r.json()["detail"]
    targets = [e["target"] for e in live.http.get("/v1/audit").json()]
    assert targets == ["control.paused", "control.checkpoint", "checkpoint", "control.stop", "run.stopped"]
    assert [e["seq"] for e in live.http.get("/v1/audit?since=3").json()] == [3, 4]
    assert [e["seq"] for e in live.http.get("/v1/audit?limit=1").json()] == [4]


def test_changes_survive_a_coordinator_restart(start_live, tmp_path):
    first = start_live(run_dir=tmp_path / "run")
    call(first, "PUT", "/v1/constraints/meteor", {"threshold": 0.3}, first.auth)
    call(first, "POST", "/v1/pause", None, first.auth)
    first.plane.stop()
    from services.coordinator.store import load_state

    second = start_live(run_dir=tmp_path / "run")
    protocol.restore(second.state, load_state(tmp_path / "run" / "coordinator.pt"))
    assert second.http.get("/v1/constraints/meteor").json()["pending"]["threshold"] == 0.3
    assert second.http.get("/v1/status").json()["paused"] is True
    assert len(second.http.get("/v1/audit").json()) == 2


def test_metrics_serves_the_prometheus_registry(live):
    r = live.http.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert "# TYPE" in r.text


def test_server_socket_disables_nagle(live):
    """Without TCP_NODELAY on accepted sockets every response stalls ~40 ms (Nagle + delayed ACK)."""
    import socket

    sock = live.plane.server.sock
    assert sock.proto == socket.IPPROTO_TCP and sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def test_a_busy_port_is_a_clear_error(live):
    from services.control.server import ControlPlaneError, bind

    port = live.plane.server.port
    with pytest.raises(ControlPlaneError, match=rf"cannot listen on 127.0.0.1:{port}: .*control.port=0"):
        bind("127.0.0.1", port, wait_seconds=0.3)


def test_reads_are_conditional_until_the_state_changes(live):
    """Reads serve a snapshot per state revision: the same ETag answers 304 until a change republishes."""
    first = live.http.get("/v1/constraints")
    etag = first.headers["etag"]
    assert first.status_code == 200 and etag.startswith('W/"')
    again = live.http.get("/v1/constraints", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert live.http.put("/v1/constraints/meteor", json={"threshold": 0.3}, headers=live.auth).status_code == 202
    changed = live.http.get("/v1/constraints", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag
    assert [c["pending"] for c in changed.json() if c["name"] == "meteor"][0]["threshold"] == 0.3
