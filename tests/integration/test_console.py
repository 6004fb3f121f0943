"""The README's command as a user runs it (a subprocess starting its own Ray): a clean terminal — crlhf's
start-up lines, the progress bar, the summary — while library output goes to train.log; the summary and
report.png agree with metrics.jsonl."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
LIBRARY_NOISE = ("absl", "Using default tokenizer", "worker.py", "UserWarning", "vllm", "chatterbot trivia", "Token authentication")


def test_terminal_is_clean_and_the_run_ends_with_its_summary(tmp_path):
    # A private Ray temp dir (short: Ray's socket paths must fit 107 bytes) with no current-cluster file, so
    # the launcher starts its own local cluster as on a fresh machine.
    # RAY_AUTH_MODE unset, as in a user's shell: Ray then warns about token authentication, and that warning
    # belongs in train.log too.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_TMPDIR": tempfile.mkdtemp(prefix="ray", dir="/tmp")}
    env.pop("RAY_ADDRESS", None)
    env.pop("RAY_AUTH_MODE", None)
    done = subprocess.run(
        [sys.executable, "-m", "services.launch", "objective=mu_ppo", "preset=smoke", "trainer.iterations=3",
         "control.port=0", f"run.root={tmp_path}", "run.name=r"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    terminal = done.stdout + done.stderr
    noisy = [line for line in terminal.splitlines() if any(word in line for word in LIBRARY_NOISE)]
    assert not noisy, noisy[:5]
    forwarded = [line for line in terminal.splitlines() if " pid=" in line]  # Ray's "(Coordinator pid=…)" prefix
    assert not forwarded, forwarded[:5]
    run = tmp_path / "r"
    log = (run / "train.log").read_text()
    assert "Using default tokenizer" in log  # absl's INFO line (rouge) reached the log, not the terminal
    assert "Token authentication is enabled" in log  # Ray's driver-side warning, too
    assert "it    2 |" in log  # the per-iteration lines are in the log
    assert "control plane listening on" in log  # the coordinator's own INFO line, not repeated on the terminal
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    # last quarter = iteration 2; the table prints 4 significant digits
    assert "satisfied" in done.stdout and f"{records[-1]['reward/topic']:.4g}" in done.stdout
    assert (run / "report.png").stat().st_size > 10_000
    assert (run / "final" / "config.json").exists()
