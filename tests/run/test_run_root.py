"""Where runs land by default: never inside Ray's temporary working directory, always an absolute path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from services.config.overrides import build_config
from services.config.run_root import default_runs_root

REPO = Path(__file__).resolve().parents[2]


def test_the_rule(tmp_path):
    job_dir = tmp_path / "session" / "runtime_resources" / "working_dir_files" / "_ray_pkg_0123abcd"
    assert default_runs_root(tmp_path, {}) == tmp_path / "runs"  # as the README and `crlhf status` assume
    assert default_runs_root(job_dir, {}) == Path.home() / "crlhf-runs"  # Ray deletes job_dir with the cluster
    assert default_runs_root(job_dir, {"CRLHF_RUNS": str(tmp_path / "shared")}) == tmp_path / "shared"
    assert default_runs_root(tmp_path, {"CRLHF_RUNS": "rel"}) == tmp_path / "rel"


def test_a_relative_root_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CRLHF_RUNS", raising=False)
    assert build_config(["run.root=out"]).run.root == tmp_path / "out"
    assert build_config([]).run.root == tmp_path / "runs"


def test_a_launch_inside_a_ray_job_working_dir_defaults_to_home(tmp_path):
    """The directory `ray job submit --working-dir .` runs the job in (the path shape Ray 2.60 uses)."""
    job_dir = tmp_path / "ray" / "session_x" / "runtime_resources" / "working_dir_files" / "_ray_pkg_0123abcd"
    job_dir.mkdir(parents=True)
    env = {**os.environ, "HOME": str(tmp_path / "home"), "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    env.pop("CRLHF_RUNS", None)
    shown = subprocess.run([sys.executable, "-m", "services.launch", "preset=smoke", "--cfg"], cwd=job_dir, env=env,
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    line = next(line for line in shown.stdout.splitlines() if line.startswith("run.root = "))
    assert line.startswith(f"run.root = {tmp_path / 'home' / 'crlhf-runs'}  # Runs are created under this directory")
