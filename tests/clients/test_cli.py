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
import yaml

from clients.cli import main
from clients.client import ControlClient, ControlError
from services.config.overrides import build_config
from services.coordinator import changes, views
from control import live as live_plane  # tests/control/live.py (tests/ is on sys.path via its conftest)


@pytest.fixture(autouse=True)
def hermetic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No run of the user's (~/crlhf-runs, $CRLHF_RUNS, ./runs) is found by accident."""
    for name in ("CRLHF_CONTROL_TOKEN", "CRLHF_URL", "CRLHF_RUN_DIR", "CRLHF_RUNS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[live_plane.Live]:
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


# --- a finished run: the server is gone, its files are not ------------------------------------------------

def records(thresholds: bool) -> list[dict]:
    """metrics.jsonl as services/ppo/iteration.py writes it: threshold/ and violation/ only for constraints."""
    out = []
    for k in range(3):
        record = {"iteration": k, "reward/meteor": 0.2 + 0.01 * k, "reward/topic": 0.5, "kl": 0.01, "tokens_per_second": 900.0,
                  "time/wall": 2.5, "weight/meteor": 0.4, "weight/topic": 0.6}
        if thresholds:
            record.update({"threshold/meteor": 0.25, "violation/meteor": 0.05 - 0.01 * k, "threshold/topic": 0.48,
                           "violation/topic": 0.0, "multiplier/meteor": 0.3, "multiplier/topic": 0.1})
        out.append(record)
    out[-1]["eval/score"] = 0.42
    return out


def write_metrics(run_dir: Path, rows: list[dict]) -> None:
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_after_the_server_is_gone_status_constraints_and_audit_read_the_files(run, capsys):
    d = str(run.run_dir)
    assert crlhf(capsys, "--run-dir", d, "constraints", "set", "meteor", "0.25")[0] == 0
    live_audit = json.loads(crlhf(capsys, "--run-dir", d, "--json", "audit")[1])
    (run.run_dir / "config.yaml").write_text(yaml.safe_dump(run.state.config.model_dump(mode="json")))  # as the driver writes it
    write_metrics(run.run_dir, records(thresholds=True))
    live_plane.stop(run)  # the run ended; control.json still names its address

    code, out, err = crlhf(capsys, "--run-dir", d, "--json", "audit")
    assert code == 0 and json.loads(out) == live_audit  # the same entries as /v1/audit gave
    assert "cannot reach the control plane" in err and f"read from the run's files in {d}" in err
    code, out, err = crlhf(capsys, "audit")  # found as the newest ./runs/* (cwd is tmp_path)
    assert code == 0 and "rewards.meteor.threshold" in out and "0.23 → 0.25" in out

    code, out, _ = crlhf(capsys, "--run-dir", d, "--json", "constraints")
    rows = {c["name"]: c for c in json.loads(out)}
    assert code == 0
    assert (rows["meteor"]["threshold"], rows["meteor"]["direction"], rows["meteor"]["current"]) == (0.25, "ge", 0.22)
    assert rows["meteor"]["constrained"] and rows["meteor"]["multiplier"] == 0.3 and rows["meteor"]["measured_at"] == 2

    code, out, err = crlhf(capsys, "--run-dir", d, "--json", "status")
    shown = json.loads(out)
    assert code == 0 and (shown["objective"], shown["state"], shown["iteration"]) == ("mu_ppo", "stopped", 2)
    assert shown["audit_entries"] == 1 and shown["last_eval"]["metrics"] == {"eval/score": 0.42}
    assert f"last iteration 2 of {run.state.config.trainer.iterations} planned" in err
    assert crlhf(capsys, "--run-dir", d, "pause")[0] == 2  # changing a run needs its server


def test_an_objective_without_constraints_shows_no_thresholds_from_its_files(tmp_path, capsys):
    run_dir = tmp_path / "runs" / "fast_rl-1"
    run_dir.mkdir(parents=True)
    config = build_config(["preset=smoke", "objective=fast_rl"])
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json")))
    write_metrics(run_dir, records(thresholds=False))  # fast_rl records weights, no threshold/ or violation/
    code, out, _ = crlhf(capsys, "--run-dir", str(run_dir), "--json", "constraints")
    assert code == 0
    assert [(c["constrained"], c["threshold"], c["direction"]) for c in json.loads(out)] == [(False, None, None)] * 2
    assert [c["weight"] for c in json.loads(out)] == [0.4, 0.6]


def test_runs_are_found_under_crlhf_runs_and_home(tmp_path, capsys, monkeypatch):
    elsewhere = tmp_path / "shared" / "fast_rl-1"
    elsewhere.mkdir(parents=True)
    write_metrics(elsewhere, records(thresholds=False))
    (elsewhere / "config.yaml").write_text(yaml.safe_dump({"objective": {"name": "fast_rl"}, "trainer": {"iterations": 3}}))
    code, _, err = crlhf(capsys, "status")
    assert code == 2 and "cannot find a run" in err and str(tmp_path / "runs") in err
    monkeypatch.setenv("CRLHF_RUNS", str(tmp_path / "shared"))
    code, out, err = crlhf(capsys, "status")
    assert code == 0 and "fast_rl" in out and "last iteration 2 of 3 planned" in err
    monkeypatch.delenv("CRLHF_RUNS")
    (tmp_path / "home").mkdir()
    (tmp_path / "shared").rename(tmp_path / "home" / "crlhf-runs")  # where `ray job submit --working-dir` runs land
    code, out, _ = crlhf(capsys, "constraints")
    assert code == 0 and "meteor" in out
    assert crlhf(capsys, "report")[0] == 0 and (tmp_path / "home" / "crlhf-runs" / "fast_rl-1" / "report.png").exists()
