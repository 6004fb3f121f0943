"""Static checks on the whole tree: no unused imports, undefined names or syntax errors (ruff, pyflakes rules;
configured in pyproject.toml)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_finds_nothing() -> None:
    if shutil.which("ruff") is None and subprocess.run([sys.executable, "-m", "ruff", "--version"], capture_output=True).returncode:
        pytest.fail("ruff is not installed: bash cluster/setup.sh installs the dev extra")
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "services", "clients", "tests", "bench", "experiments"],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
