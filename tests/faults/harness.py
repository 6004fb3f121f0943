"""Runs of `python -m services.launch` (or tests/faults/runner.py) as real subprocesses, each on its own
local Ray cluster (run.ray_address=local: never a cluster someone else left running on the machine)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ["preset=smoke", "control.port=0", "run.ray_address=local", "evaluation.every=0"]
COMPARED = ("reward/meteor", "reward/topic", "kl", "kl_coef", "policy_loss", "tokens")


def env() -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    e.update(HF_HUB_OFFLINE="1", RAY_AUTH_MODE="disabled", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1",
             PYTHONPATH=str(ROOT))  # workers import tests.faults (the setup hook runs before Ray sets their sys.path)
    return e


def start(args: list[str], module: str = "services.launch", log: Path | None = None) -> subprocess.Popen:
    """In its own session, so the whole process group (driver and the Ray cluster it started) can be signalled."""
    out = open(log, "w") if log is not None else subprocess.PIPE  # noqa: SIM115 - the child owns it
    return subprocess.Popen([sys.executable, "-m", module, *args], cwd=ROOT, env=env(), stdout=out, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def run(args: list[str], module: str = "services.launch", timeout: float = 600) -> tuple[int, str]:
    proc = start(args, module)
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        stop_group(proc)
    return proc.returncode, out


def stop_group(proc: subprocess.Popen) -> None:
    """Whatever the driver left of its local Ray cluster goes with it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=60)


def records(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def wait_for(predicate, timeout: float = 300, what: str = "condition", proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the run ended (exit {proc.returncode}) before {what}")
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def assert_same_numbers(got: list[dict[str, Any]], twin: list[dict[str, Any]]) -> None:
    """Same iterations, once each, and the same rewards/KL/loss as the uninterrupted twin (1e-4)."""
    assert [r["iteration"] for r in got] == [r["iteration"] for r in twin]
    for a, b in zip(twin, got):
        for key in COMPARED:
            assert abs(b[key] - a[key]) <= 1e-4 * max(1.0, abs(a[key])), (a["iteration"], key, a[key], b[key])
