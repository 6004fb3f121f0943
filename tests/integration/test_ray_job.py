"""`ray job submit` against a real `ray start --head` cluster on loopback, as users run it."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow

DASHBOARD = "http://127.0.0.1:8265"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def head_node():
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's unix socket paths have a length limit
    bin_dir = Path(sys.executable).parent
    # As a user with the virtual environment activated: the job's `python` is the venv's, not the system's.
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "HF_HUB_OFFLINE": "1", "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}"}
    # The agent's ports default to fixed numbers (52365, …) that the test session's own Ray cluster
    # (tests/conftest.py) already holds; a head node whose agent cannot bind them accepts no job
    # ("No available agent to submit job").
    agent_ports = [f"--{flag}={free_port()}" for flag in
                   ("dashboard-agent-listen-port", "dashboard-agent-grpc-port", "runtime-env-agent-port", "metrics-export-port")]
    proc = subprocess.Popen(
        [str(bin_dir / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1", "--port=6399",
         "--dashboard-host=127.0.0.1", "--dashboard-port=8265", "--num-cpus=4", "--disable-usage-stats",
         *agent_ports, f"--temp-dir={temp}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{DASHBOARD}/api/version", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(1)
    else:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("ray head node did not come up within 90 s")
    yield env
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    shutil.rmtree(temp, ignore_errors=True)


def submit(env: dict[str, str], *command: str) -> subprocess.CompletedProcess:
    """`ray job submit`, retried while the head node's job agent is still starting: the dashboard answers
    before its agent registers (Ray says "No available agent to submit job, please try again later")."""
    bin_dir = Path(sys.executable).parent
    deadline = time.monotonic() + 240
    while True:
        result = subprocess.run(
            [str(bin_dir / "ray"), "job", "submit", "--address", DASHBOARD, "--", *command],
            env=env, capture_output=True, text=True, timeout=600,
        )
        if "No available agent" not in result.stdout + result.stderr or time.monotonic() > deadline:
            return result
        time.sleep(3)


def test_ray_job_submit_runs_the_smoke_preset(head_node, tmp_path):
    result = submit(head_node, "python", "-m", "services.launch", "objective=ppo", "preset=smoke", "trainer.iterations=2",
                    "control.port=0", f"run.root={tmp_path}", "run.name=job")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "succeeded" in result.stdout + result.stderr
    lines = (tmp_path / "job" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["iteration"] for line in lines] == [0, 1]
    assert "connected to the Ray cluster at" in (tmp_path / "job" / "train.log").read_text()  # RAY_ADDRESS, set by the job
