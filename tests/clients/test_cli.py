"""`crlhf` CLI and the Python client against a live control plane (uvicorn on 127.0.0.1)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from clients.cli import main
from clients.client import ControlClient, ControlError
from services.coordinator import changes, views
from control import live as live_plane  # tests/control/live.py (tests/ is on sys.path via its conftest)


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[live_plane.Live]:
    for name in ("CRLHF_CONTROL_TOKEN", "CRLHF_URL", "CRLHF_RUN_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COLUMNS", "200")  # wide tables, no truncation in captured output
    live = live_plane.start(live_plane.smoke_config(), tmp_path / "runs" / "mu_ppo-1")
    yield live
    live_plane.stop(live)


def crlhf(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_status_and_constraints_tables(run, capsys):
    code, out, _ = crlhf(capsys, "--run-dir", str(run.run_dir), "status")
    assert code == 0 and "mu_ppo" in out and "running" in out and "changes apply from" in out
    code, out, _ = crlhf(capsys, "--run-dir", str(run.run_dir), "constraints")
    assert code == 0
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.strip().startswith(("meteor", "topic"))}
    assert rows["meteor"][1:3] == ["0.23", "ge"] and rows["topic"][1:3] == ["0.48", "ge"]


def test_set_threshold_objective_and_controls_then_audit(run, capsys):
    d = str(run.run_dir)
    code, out, _ = crlhf(capsys, "--run-dir", d, "constraints", "set", "meteor", "0.25")
    assert code == 0 and "rewards.meteor.threshold: 0.23 → 0.25" in out and "applies from iteration 0" in out
    assert views.constraint(run.state, "meteor")["pending"]["threshold"] == 0.25
    code, out, _ = crlhf(capsys, "--run-dir", d, "constraints", "set", "topic", "--direction", "le")
    assert code == 0 and 'rewards.topic.direction: "ge" → "le"' in out
    code, out, _ = crlhf(capsys, "--run-dir", d, "objective", "set", "multiplier_lr=0.05", "fixed_multipliers=true")
    assert code == 0 and "objective.multiplier_lr: 0.1 → 0.05" in out and "objective.fixed_multipliers: false → true" in out
    for action in ("pause", "checkpoint", "resume", "stop"):
        code, out, _ = crlhf(capsys, "--run-dir", d, action)
        assert code == 0 and f"{action}: requested" in out
    assert changes.poll_controls(run.state) == {"paused": False, "stop": True, "checkpoint": True}
    code, out, _ = crlhf(capsys, "--run-dir", d, "audit")
    assert code == 0
    for target in ("rewards.meteor.threshold", "rewards.topic.direction", "objective.multiplier_lr", "control.paused", "control.stop"):
        assert target in out
    code, out, _ = crlhf(capsys, "--run-dir", d, "--json", "audit", "--limit", "2")
    assert [e["target"] for e in json.loads(out)] == ["control.paused", "control.stop"]
    code, out, _ = crlhf(capsys, "--run-dir", d, "objective")
    assert code == 0 and "multiplier_lr" in out and "fixed: only seeds" in out


def test_server_errors_are_shown_with_their_detail(run, capsys):
    d = str(run.run_dir)
    code, _, err = crlhf(capsys, "--run-dir", d, "constraints", "set", "metor", "0.2")
    assert code == 1 and "unknown reward 'metor'; did you mean 'meteor'?" in err and "HTTP 404" in err
    code, _, err = crlhf(capsys, "--run-dir", d, "constraints", "set", "meteor", "NaN")
    assert code == 1 and "finite" in err and "HTTP 422" in err
    code, _, err = crlhf(capsys, "--run-dir", d, "objective", "set", "lagrange_lr=0.05")
    assert code == 1 and "unknown mu_ppo hyperparameter 'lagrange_lr'" in err
    code, _, err = crlhf(capsys, "--run-dir", d, "objective", "set", "multiplier_lr")
    assert code == 2 and "expected KEY=VALUE" in err
    code, _, err = crlhf(capsys, "--run-dir", d, "nelder-mead")
    assert code == 1 and "only nm_ppo" in err
    assert run.state.audit == []


def test_wrong_token_from_the_environment(run, capsys, monkeypatch):
    monkeypatch.setenv("CRLHF_CONTROL_TOKEN", "wrong-token-0123456789")
    code, _, err = crlhf(capsys, "--run-dir", str(run.run_dir), "pause")
    assert code == 1 and "invalid bearer token (HTTP 401)" in err
    assert "wrong-token" not in err


def test_discovery_from_env_and_newest_run(run, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("CRLHF_RUN_DIR", str(run.run_dir))
    assert crlhf(capsys, "health")[0] == 0
    monkeypatch.delenv("CRLHF_RUN_DIR")
    monkeypatch.setenv("CRLHF_URL", run.url)
    monkeypatch.setenv("CRLHF_CONTROL_TOKEN", run.token)
    assert crlhf(capsys, "pause")[0] == 0
    monkeypatch.delenv("CRLHF_URL")
    monkeypatch.delenv("CRLHF_CONTROL_TOKEN")
    monkeypatch.chdir(tmp_path)  # ./runs/mu_ppo-1/control.json is the newest run
    code, out, _ = crlhf(capsys, "status")
    assert code == 0 and "paused" in out


def test_no_run_or_no_server_is_a_clear_error(tmp_path, capsys, monkeypatch):
    for name in ("CRLHF_CONTROL_TOKEN", "CRLHF_URL", "CRLHF_RUN_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    code, _, err = crlhf(capsys, "status")
    assert code == 2 and "cannot find a run" in err
    code, _, err = crlhf(capsys, "--run-dir", str(tmp_path), "status")
    assert code == 2 and "control.json missing" in err
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, _, err = crlhf(capsys, "--url", f"http://127.0.0.1:{port}", "status")
    assert code == 2 and "cannot reach the control plane" in err


def test_python_client_is_typed_and_raises_with_detail(run):
    with ControlClient.discover(run_dir=run.run_dir, user="nb") as client:
        assert client.status().objective == "mu_ppo"
        change = client.set_constraint("meteor", threshold=0.3)
        assert change.applies_from == 0 and change.changes[0].who == "nb@127.0.0.1"
        assert client.constraint("meteor").pending.threshold == 0.3
        assert client.patch_objective(multiplier_lr=0.2).objective.pending == {"multiplier_lr": 0.2}
        with pytest.raises(ControlError) as raised:
            client.set_constraint("meteor", threshold=float("inf"))
        assert raised.value.status == 422 and "finite" in raised.value.detail
        assert "# TYPE" in client.metrics()
    with ControlClient(run.url) as anonymous:
        with pytest.raises(ControlError, match="needs its token"):
            anonymous.pause()


def test_console_script_entry_point(run):
    exe = Path(sys.executable).with_name("crlhf")
    if not exe.exists():
        pytest.skip("crlhf console script not installed in this environment")
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("CRLHF_CONTROL_TOKEN", None)
    result = subprocess.run([str(exe), "--run-dir", str(run.run_dir), "constraints"], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "meteor" in result.stdout and "topic" in result.stdout
