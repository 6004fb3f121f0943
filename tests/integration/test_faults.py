"""Chaos and stop tests on real smoke runs: `python -m services.launch` as a real subprocess on its own local
Ray cluster; actors are killed with SIGKILL by the process id the run publishes in <run dir>/actors.json.

Every run here has a fixed seed and `checkpoint.every=2`, and is compared with one uninterrupted twin:
same iterations, once each, same rewards/KL/loss (1e-4). Recovery times are printed (pytest -s) for
docs/RELIABILITY.md, never asserted."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from tests.faults.harness import SMOKE, assert_same_numbers, env, records, run, start, stop_group, wait_for

pytestmark = pytest.mark.slow
ITERATIONS = 6
RUN = [*SMOKE, f"trainer.iterations={ITERATIONS}", "checkpoint.every=2"]


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    root = tmp_path_factory.mktemp("twin")
    code, out = run([*RUN, f"run.root={root}", "run.name=twin"])
    assert code == 0, out
    return records(root / "twin")


def lines(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_lost_reward_rollout_and_learner_actors_are_replaced_and_the_run_matches_its_twin(tmp_path, twin):
    run_dir = tmp_path / "chaos"
    log = tmp_path / "chaos.log"
    proc = start([*RUN, f"run.root={tmp_path}", "run.name=chaos"], log=log)
    killed = {}
    try:
        for after, victim in ((1, "reward/1"), (2, "rollout/0"), (3, "learner")):
            wait_for(lambda: lines(run_dir) >= after, what=f"metrics line {after}", proc=proc)
            pid = json.loads((run_dir / "actors.json").read_text())[victim]
            os.kill(pid, signal.SIGKILL)
            killed[victim] = (pid, time.monotonic())
        proc.wait(timeout=600)
    finally:
        stop_group(proc)
    out = log.read_text()
    assert proc.returncode == 0, out
    assert_same_numbers(records(run_dir), twin)
    final = json.loads((run_dir / "actors.json").read_text())
    assert all(final[v] != pid for v, (pid, _) in killed.items()), (killed, final)  # each was really replaced
    assert "learner lost: rolled back to" in out and "rollout weights restored" in out
    print("\nrecoveries:", re.findall(r"recovered in [0-9.]+ s; running iteration \d+", out))


def test_sigterm_checkpoints_prints_the_resume_command_and_resume_matches_the_twin(tmp_path, twin):
    run_dir = tmp_path / "term"
    proc = start([*RUN, f"run.root={tmp_path}", "run.name=term"])
    try:
        wait_for(lambda: lines(run_dir) >= 1, what="the first metrics line", proc=proc)
        proc.send_signal(signal.SIGTERM)  # what `ray job stop` sends the driver
        out, _ = proc.communicate(timeout=300)
    finally:
        stop_group(proc)
    assert proc.returncode == 143, out
    assert f"resume with: python -m services.launch resume={run_dir.resolve()}" in out
    done = records(run_dir)
    assert done and (run_dir / "checkpoints" / "latest").read_text() == f"iter_{done[-1]['iteration']:06d}"
    code, out = run([f"resume={run_dir}"])
    assert code == 0, out
    assert_same_numbers(records(run_dir), twin)


def test_a_second_signal_stops_at_once(tmp_path):
    run_dir, log = tmp_path / "int", tmp_path / "int.log"
    # Somewhat longer iterations, so the second signal lands while the first one's iteration (or the final
    # checkpoint) is still running.
    proc = start([*RUN, "trainer.iterations=50", "rollout.sampling.max_new_tokens=16", f"run.root={tmp_path}", "run.name=int"], log=log)
    try:
        wait_for(lambda: lines(run_dir) >= 1, timeout=600, what="the first metrics line", proc=proc)
        proc.send_signal(signal.SIGINT)
        # Signals sent before Python ran the first handler coalesce into one: wait until it said so.
        wait_for(lambda: "send it again to stop at once" in log.read_text(), what="the first signal's message", proc=proc)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=300)
    finally:
        stop_group(proc)
    out = log.read_text()
    assert proc.returncode == 130, out
    assert "stopped at once by a second SIGINT" in out and "resume from the last checkpoint with:" in out
    assert "Traceback" not in out


def test_a_driver_killed_with_sigkill_resumes_exactly(tmp_path, twin):
    run_dir = tmp_path / "kill"
    proc = start([*RUN, f"run.root={tmp_path}", "run.name=kill"])
    try:
        wait_for(lambda: lines(run_dir) >= 3 and (run_dir / "checkpoints" / "latest").exists(), what="a checkpoint", proc=proc)
    finally:
        stop_group(proc)  # SIGKILL to the driver and the Ray cluster it started
    code, out = run([f"resume={run_dir}"])
    assert code == 0, out
    assert_same_numbers(records(run_dir), twin)


def test_a_truncated_checkpoint_is_refused_naming_the_file_and_the_previous_one_is_used(tmp_path):
    run_dir = tmp_path / "trunc"
    code, out = run([*RUN, "trainer.iterations=4", "checkpoint.every=1", "checkpoint.keep_last=2", f"run.root={tmp_path}", "run.name=trunc"])
    assert code == 0, out
    before = records(run_dir)  # the uninterrupted run: iteration 3, computed again after the fallback, must match
    newest = run_dir / "checkpoints" / "iter_000003"
    damaged = next(p for p in sorted(newest.rglob("*")) if p.is_file() and p.suffix in (".pt", ".safetensors") and p.stat().st_size > 100)
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])
    code, out = run([f"resume={run_dir}"])
    assert code == 0, out
    assert f"checkpoint refused: {damaged} is truncated" in out
    assert f"using the previous checkpoint {run_dir / 'checkpoints' / 'iter_000002'}" in out
    assert "resumed from" in out and "at iteration 3" in out
    assert_same_numbers(records(run_dir), before)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_actor_that_cannot_be_placed_stops_the_run_naming_it_and_status_says_waiting(tmp_path):
    """A real Ray head with 2 CPUs; the learner asks for a custom resource no node has."""
    port = _free_port()
    temp = tempfile.mkdtemp(prefix="/tmp/rh")  # short: Ray's socket paths must fit in 107 characters
    head = subprocess.Popen(
        [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
         "--node-ip-address=127.0.0.1", "--include-dashboard=false", f"--temp-dir={temp}"],
        env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    run_dir = tmp_path / "pending"
    try:
        time.sleep(8)
        proc = start([*RUN, f"run.ray_address=127.0.0.1:{port}", "learner.num_cpus=0.5", "placement.learner={gpu_box: 1}",
                      "run.actor_start_timeout_s=45", f"run.root={tmp_path}", "run.name=pending"])
        try:
            wait_for(lambda: (run_dir / "control.json").exists(), what="the control plane", proc=proc)
            url = json.loads((run_dir / "control.json").read_text())["url"]
            seen = []

            def waiting() -> bool:
                try:
                    seen.append(httpx.get(f"{url}/v1/status", timeout=5).json())
                except httpx.TransportError:  # not listening yet
                    return False
                return seen[-1]["state"] == "waiting for resources"

            wait_for(waiting, timeout=60, what="/v1/status to say waiting", proc=proc)
            assert seen[-1]["waiting_for"] == "learner"
            out, _ = proc.communicate(timeout=120)
        finally:
            stop_group(proc)
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        head.wait(timeout=60)
    assert proc.returncode == 2, out
    assert "learner asks for CPU 0.5, gpu_box 1; short of gpu_box (free 0)" in out and "run.actor_start_timeout_s=45" in out
    assert "Traceback" not in out and records(run_dir) == []
