"""Fixtures: a real Prometheus scraping the control plane of real runs (see harness.py for the two modes)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from . import harness
from .harness import CONTROL_PLANE_WIRED  # the switch between a real run's control plane and a replay

# Every run scraped by the session's Prometheus. A panel passes when it returns data for any of them:
# no single objective records everything (multipliers: mu_ppo; the Nelder–Mead search: nm_ppo).
RUN_OVERRIDES: dict[str, list[str]] = {
    "mu_ppo": ["preset=smoke", "objective=mu_ppo", "evaluation.every=1", "checkpoint.every=0"],
}
NM_OVERRIDES = ["preset=smoke", "objective=nm_ppo", "evaluation.every=1", "checkpoint.every=0"]
MIN_ITERATIONS = 4  # committed and scraped before the tests query
REPLAY_PACE = 1.5  # seconds between replayed commits (a smoke iteration takes ~2-5 s)


def nm_ppo_registered() -> bool:
    from services.objectives.registry import OBJECTIVES

    return "nm_ppo" in OBJECTIVES


@dataclass
class ObservedRun:
    objective: str
    label: str  # the `run` label of its series
    url: str
    token: str
    launched: harness.LaunchedRun | None  # wired mode: the live run
    replayed: harness.ReplayedRun | None  # not wired: the replay serving it

    @property
    def state(self) -> Any:
        """The in-process CoordinatorState (replay mode only)."""
        return None if self.replayed is None else self.replayed.state


@dataclass
class Observed:
    prometheus: harness.Prometheus
    runs: list[ObservedRun]
    started: float

    def run(self, objective: str) -> ObservedRun:
        return next(r for r in self.runs if r.objective == objective)


def _iteration(url: str) -> int:
    try:
        return int(httpx.get(f"{url}/v1/health", timeout=5).json()["iteration"])
    except (httpx.HTTPError, KeyError, ValueError):
        return -1


def _start_wired(root: Path, objective: str, overrides: list[str], prometheus: harness.Prometheus, keep_running: bool) -> ObservedRun:
    iterations = "trainer.iterations=1000" if keep_running else f"trainer.iterations={MIN_ITERATIONS + 1}"
    launched = harness.launch(root, objective, [*overrides, iterations])

    def control() -> tuple[str, str] | None:
        launched.check_alive()
        return launched.control()

    url, token = harness.wait_for(control, 240, f"the {objective} run's control plane")
    label = httpx.get(f"{url}/v1/history", params={"limit": 1}, timeout=10).json()["run"]
    prometheus.add_target(url)
    run = ObservedRun(objective, label, url, token, launched, None)
    if keep_running:
        harness.wait_for(lambda: launched.check_alive() or _iteration(url) >= MIN_ITERATIONS - 1, 300, f"{MIN_ITERATIONS} iterations")
    else:
        launched.wait(300)
    return run


def _start_replayed(root: Path, objective: str, overrides: list[str], prometheus: harness.Prometheus) -> ObservedRun:
    launched = harness.launch(root, objective, [*overrides, f"trainer.iterations={MIN_ITERATIONS}", "control.enabled=false"])
    assert launched.wait(300) == 0, launched.log_tail()
    label = f"{objective}-replay"
    replayed = harness.replay(launched.run_dir, label, REPLAY_PACE)
    prometheus.add_target(replayed.url)
    run = ObservedRun(objective, label, replayed.url, replayed.token, None, replayed)
    harness.wait_for(replayed.done.is_set, 120, "the replay")
    return run


@pytest.fixture(scope="session")
def observed(ray_local, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    """Prometheus (1 s scrapes) over real runs: an nm_ppo run first when that objective exists (it ends),
    then a mu_ppo run that stays up (wired mode) for the live-page test. Yields once every run has
    MIN_ITERATIONS iterations scraped."""
    root = tmp_path_factory.mktemp("observed")
    prometheus = harness.Prometheus(root / "prometheus")
    started = time.time()
    runs: list[ObservedRun] = []
    plan = ([("nm_ppo", NM_OVERRIDES)] if nm_ppo_registered() else []) + list(RUN_OVERRIDES.items())
    try:
        for i, (objective, overrides) in enumerate(plan):
            last = i == len(plan) - 1
            if CONTROL_PLANE_WIRED:
                runs.append(_start_wired(root / "runs", objective, overrides, prometheus, keep_running=last))
            else:
                runs.append(_start_replayed(root / "runs", objective, overrides, prometheus))
        for run in runs:
            harness.wait_for(
                # max_over_time: a run that already ended is stale now, but was scraped while it ran.
                lambda label=run.label: prometheus.query(f'max_over_time(crlhf_iterations_total{{run="{label}"}}[30m]) >= {MIN_ITERATIONS - 1}'),
                120, f"Prometheus to scrape {MIN_ITERATIONS} iterations of {run.label}",
            )
        time.sleep(3)  # a few more scrapes after the last commit, so rate windows hold the increases
        yield Observed(prometheus, runs, started)
    finally:
        for run in runs:
            if run.launched is not None:
                run.launched.stop(run.url, run.token)
            if run.replayed is not None:
                run.replayed.stop()
        prometheus.stop()
