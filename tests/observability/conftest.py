"""Fixtures: a real Prometheus scraping the control plane of real runs (see harness.py for the two modes)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from . import harness

# Every run scraped by the session's Prometheus. A panel passes when it returns data for any of them:
# no single objective records everything (multipliers: mu_ppo; the Nelder–Mead search: nm_ppo).
RUN_OVERRIDES: dict[str, list[str]] = {
    "mu_ppo": ["preset=smoke", "objective=mu_ppo", "evaluation.every=1", "checkpoint.every=0"],
}
NM_OVERRIDES = ["preset=smoke", "objective=nm_ppo", "evaluation.every=1", "checkpoint.every=0"]
MIN_ITERATIONS = 4  # committed and scraped before the tests query


def nm_ppo_registered() -> bool:
    from services.objectives.registry import OBJECTIVES

    return "nm_ppo" in OBJECTIVES


@dataclass
class ObservedRun:
    objective: str
    label: str  # the `run` label of its series
    url: str
    token: str
    launched: harness.LaunchedRun


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


def _start(root: Path, objective: str, overrides: list[str], prometheus: harness.Prometheus, keep_running: bool) -> ObservedRun:
    iterations = "trainer.iterations=1000" if keep_running else f"trainer.iterations={MIN_ITERATIONS + 1}"
    launched = harness.launch(root, objective, [*overrides, iterations])

    def control() -> tuple[str, str] | None:
        launched.check_alive()
        return launched.control()

    url, token = harness.wait_for(control, 240, f"the {objective} run's control plane")
    label = httpx.get(f"{url}/v1/history", params={"limit": 1}, timeout=10).json()["run"]
    prometheus.add_target(url)
    run = ObservedRun(objective, label, url, token, launched)
    if keep_running:
        harness.wait_for(lambda: launched.check_alive() or _iteration(url) >= MIN_ITERATIONS - 1, 300, f"{MIN_ITERATIONS} iterations")
    else:
        launched.wait(300)
    return run


# Package scope: the mu_ppo run keeps training until teardown, and must not eat the CPU of the tests after these.
@pytest.fixture(scope="package")
def observed(ray_local, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    """Prometheus (1 s scrapes) over real runs: an nm_ppo run first when that objective exists (it ends),
    then a mu_ppo run that stays up for the live-page test. Yields once every run has
    MIN_ITERATIONS iterations scraped."""
    root = tmp_path_factory.mktemp("observed")
    prometheus = harness.Prometheus(root / "prometheus")
    started = time.time()
    runs: list[ObservedRun] = []
    plan = ([("nm_ppo", NM_OVERRIDES)] if nm_ppo_registered() else []) + list(RUN_OVERRIDES.items())
    try:
        for i, (objective, overrides) in enumerate(plan):
            last = i == len(plan) - 1
            runs.append(_start(root / "runs", objective, overrides, prometheus, keep_running=last))
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
            run.launched.stop(run.url, run.token)
        prometheus.stop()
