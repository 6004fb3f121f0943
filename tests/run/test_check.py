"""`python -m services.launch ...` as a new user runs it, with their own files: every bad input is one line on
stderr naming the file/line/reward/resource and the fix, exit code 2, no traceback, no Ray started, nothing
written; `--check` runs only the preflight."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def launch(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The launcher in a private RAY_TMPDIR and run.root, so the test can see whether it started Ray or wrote."""
    base = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled", "RAY_TMPDIR": str(tmp_path / "ray"),
            "PYTHONPATH": str(REPO)}
    base.pop("RAY_ADDRESS", None)
    return subprocess.run([sys.executable, "-m", "services.launch", "preset=smoke", f"run.root={tmp_path / 'runs'}", *args],
                          cwd=tmp_path, env={**base, **(env or {})}, capture_output=True, text=True, timeout=300)


def assert_refused(result: subprocess.CompletedProcess, tmp_path: Path, message: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stderr.strip().count("\n") == 0, result.stderr  # one line
    assert not (tmp_path / "runs").exists()  # no run directory: nothing written
    assert not (tmp_path / "ray").exists()  # no Ray session: no cluster started, no actor


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


ROWS = [{"context": f"hello {i} <EOU> how are you", "reference": f"fine {i}"} for i in range(40)]


def test_a_malformed_line_is_one_message_naming_file_and_line(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n" + '{"context": "a", "reference": "b"\n')
    result = launch(tmp_path, f"data.source={path}")
    assert_refused(result, tmp_path, f"crlhf: data: {path} line 2: not valid JSON")
    debug = launch(tmp_path, f"data.source={path}", "--debug")
    assert debug.returncode == 2 and "Traceback" in debug.stderr  # --debug shows where


def test_an_empty_file_is_named(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    assert_refused(launch(tmp_path, f"data.source={tmp_path / 'empty.jsonl'}"), tmp_path, "empty.jsonl is empty")


def test_an_empty_reference_is_refused_or_dropped(tmp_path):
    path = write_jsonl(tmp_path / "mine.jsonl", [*ROWS, {"context": "x", "reference": ""}])
    common = [f"data.source={path}", "data.label_column=null", "rewards.topic=null"]
    assert_refused(launch(tmp_path, *common), tmp_path, f"{path} line 41, column 'reference': empty reference: "
                   "fill it in, or set data.drop_empty=true")
    dropped = launch(tmp_path, *common, "data.drop_empty=true", "run.ray_address=local", "--check")
    assert dropped.returncode == 0, dropped.stderr
    assert "dropped 1 of 41 rows" in dropped.stdout + dropped.stderr


def test_the_default_topic_reward_on_unlabelled_data_is_refused_before_any_cluster(tmp_path):
    path = write_jsonl(tmp_path / "mine.jsonl", ROWS)
    result = launch(tmp_path, f"data.source={path}", "data.label_column=null")
    assert_refused(result, tmp_path, "reward 'topic' (classifier) scores each response against the row's class label")
    assert "set rewards.topic=null" in result.stderr and "data.label_column=COLUMN" in result.stderr


def test_check_without_a_cluster_says_what_a_local_one_would_get(tmp_path):
    path = write_jsonl(tmp_path / "mine.jsonl", ROWS)
    # run.ray_address=local: whatever else runs on this machine, no cluster is joined
    result = launch(tmp_path, f"data.source={path}", "data.label_column=null", "rewards.topic=null", "run.ray_address=local",
                    "--check")
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip().splitlines()[-1]
    assert line.startswith("preflight ok: objective ppo; ") and f"examples from {path}" in line
    assert "no Ray cluster to join (run.ray_address=local): a run starts a local one with" in line
    assert not (tmp_path / "runs").exists() and not (tmp_path / "ray").exists()


def test_check_reports_a_stale_current_cluster_file_and_starts_nothing(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens on it once closed
    ray_temp = tmp_path / "ray" / "ray"  # Ray's temp dir is $RAY_TMPDIR/ray
    ray_temp.mkdir(parents=True)
    (ray_temp / "ray_current_cluster").write_text(f"127.0.0.1:{port}")  # what a killed `ray start` leaves
    result = launch(tmp_path, "--check")
    assert result.returncode == 0, result.stderr
    assert f"the Ray cluster at 127.0.0.1:{port}" in result.stdout and "stale" in result.stdout
    assert [p.name for p in ray_temp.iterdir()] == ["ray_current_cluster"]  # no session started


def test_check_with_an_unreachable_explicit_address_exits_2(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = launch(tmp_path, "--check", env={"RAY_ADDRESS": f"127.0.0.1:{port}"})
    assert_refused(result, tmp_path, f"cannot reach the Ray cluster at 127.0.0.1:{port} (from RAY_ADDRESS)")


@pytest.fixture
def two_cpu_head():
    """`ray start --head --num-cpus=2` as the README's small node, in a private temp dir (short: Ray's socket
    paths have a length limit)."""
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
         f"--port={port}", "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(1)
    else:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("ray head node did not come up within 90 s")
    yield address
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.slow
def test_check_against_a_two_cpu_head_names_the_shortfall_and_the_fix(tmp_path, two_cpu_head):
    short = launch(tmp_path, "--check", env={"RAY_ADDRESS": two_cpu_head})
    assert short.returncode == 2, short.stdout + short.stderr
    assert "this cluster has 2 CPUs, the run needs 2.5" in short.stderr and "--num-cpus=3" in short.stderr
    assert "Traceback" not in short.stderr and not (tmp_path / "runs").exists()
    fits = launch(tmp_path, "--check", "rollout.num_cpus=0.5", env={"RAY_ADDRESS": two_cpu_head})
    assert fits.returncode == 0, fits.stderr
    assert f"the Ray cluster at {two_cpu_head} (from RAY_ADDRESS) has 2 CPUs and 0 GPUs, the run needs 2 CPUs" in fits.stdout
