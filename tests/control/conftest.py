"""Fixtures: live control planes (see live.py)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from . import live as live_plane
from .live import Live, smoke_config


@pytest.fixture
def start_live(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Live]]:
    """Start a fresh control plane (mu_ppo, smoke preset, plus overrides); stopped after the test."""
    monkeypatch.delenv("CRLHF_CONTROL_TOKEN", raising=False)
    started: list[Live] = []

    def start(*overrides: str, run_dir: Path | None = None) -> Live:
        started.append(live_plane.start(smoke_config(*overrides), run_dir or tmp_path / f"run{len(started)}"))
        return started[-1]

    yield start
    for live in started:
        live_plane.stop(live)


@pytest.fixture
def live(start_live: Callable[..., Live]) -> Live:
    """mu_ppo on the smoke preset (rewards meteor ≥ 0.23, topic ≥ 0.48), fresh for this test."""
    return start_live()


@pytest.fixture(scope="module")
def shared_live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """One server for a module's tests that only read or make rejected requests (faster than one per test)."""
    saved = os.environ.pop("CRLHF_CONTROL_TOKEN", None)
    live = live_plane.start(smoke_config(), tmp_path_factory.mktemp("shared"))
    yield live
    live_plane.stop(live)
    if saved is not None:
        os.environ["CRLHF_CONTROL_TOKEN"] = saved
