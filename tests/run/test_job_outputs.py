"""Under `ray job submit --working-dir`, the default run.root is ~/crlhf-runs, not Ray's temporary working
directory; the preflight runs inside the job against the job's cluster; the job's log gives the absolute run
directory and the control URL. A real `ray start --head` (2 CPUs, private temp dir, free ports) and real job
submissions: --cfg, --check, then one smoke iteration."""

from __future__ import annotations

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

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def head(tmp_path):
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's unix socket paths have a length limit
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "HF_HUB_OFFLINE": "1", "HOME": str(tmp_path / "home"),
           "PYTHONPATH": str(REPO), "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}"}
    env.pop("CRLHF_RUNS", None)
    env.pop("RAY_ADDRESS", None)
    dashboard = free_port()
    # Fixed default agent ports may be held by another Ray cluster on this machine (tests/integration/test_ray_job.py).
    ports = [f"--{flag}={free_port()}" for flag in
             ("dashboard-agent-listen-port", "dashboard-agent-grpc-port", "runtime-env-agent-port", "metrics-export-port")]
    proc = subprocess.Popen(
        [str(bin_dir / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={free_port()}",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", "--num-cpus=2", "--disable-usage-stats",
         *ports, f"--temp-dir={temp}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    url = f"http://127.0.0.1:{dashboard}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/api/version", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(1)
    else:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("ray head node did not come up within 120 s")
    yield url, env
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    shutil.rmtree(temp, ignore_errors=True)


def submit(url: str, env: dict[str, str], working_dir: Path, *command: str) -> subprocess.CompletedProcess:
    """Retried while the head's job agent is still starting ("No available agent to submit job")."""
    deadline = time.monotonic() + 240
    while True:
        result = subprocess.run(
            [str(Path(sys.executable).parent / "ray"), "job", "submit", "--address", url, "--working-dir", str(working_dir),
             "--", *command], env=env, capture_output=True, text=True, timeout=600,
        )
        if "No available agent" not in result.stdout + result.stderr or time.monotonic() > deadline:
            return result
        time.sleep(3)


def test_a_job_from_a_working_dir_writes_under_home_and_checks_its_cluster(head, tmp_path):
    url, env = head
    job_dir = tmp_path / "job"  # a small working dir (the code comes from PYTHONPATH)
    job_dir.mkdir()
    (job_dir / "README").write_text("job working dir\n")
    shown = submit(url, env, job_dir, "python", "-m", "services.launch", "preset=smoke", "--cfg")
    output = shown.stdout + shown.stderr
    assert shown.returncode == 0, output[-3000:]
    assert f"run.root = {tmp_path / 'home' / 'crlhf-runs'}  #" in output  # not .../runtime_resources/.../_ray_pkg_*/runs
    checked = submit(url, env, job_dir, "python", "-m", "services.launch", "preset=smoke", "rollout.num_cpus=0.5", "--check")
    output = checked.stdout + checked.stderr
    assert checked.returncode == 0, output[-3000:]
    assert "preflight ok: " in output and "(from RAY_ADDRESS) has 2 CPUs and 0 GPUs, the run needs 2 CPUs" in output
    assert not (tmp_path / "home" / "crlhf-runs").exists()  # a preflight writes nothing
    trained = submit(url, env, job_dir, "python", "-m", "services.launch", "objective=fast_rl", "preset=smoke",
                     "rollout.num_cpus=0.5", "trainer.iterations=1", "evaluation.every=0", "control.port=0", "run.name=job")
    output = trained.stdout + trained.stderr
    assert trained.returncode == 0, output[-3000:]
    run_dir = tmp_path / "home" / "crlhf-runs" / "job"
    assert f"run directory: {run_dir}" in output and "control plane: http://127.0.0.1:" in output  # in the job's log
    assert (run_dir / "metrics.jsonl").exists() and not list(job_dir.rglob("metrics.jsonl"))
