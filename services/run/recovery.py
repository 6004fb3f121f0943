"""Bringing a run back after a lost actor, and loading checkpoints with a fallback (docs/RELIABILITY.md).

Functions over the driver (`services.driver.Driver`, passed in; typed loosely to keep the import arrow
one-way): they read its actors, sampler, checkpoints and weights version, and put them back in step.

- A lost rollout actor restarts with the base model's weights: it gets the current weights again before it
  generates (its generate refuses a version it does not hold, so nothing samples with stale weights).
- A lost reward actor restarts and Ray re-runs its scoring call (it is idempotent): nothing to restore.
- A lost learner restarts empty: the run rolls back to the newest usable checkpoint (learner, coordinator
  state, sampler position, metrics.jsonl trimmed), or to its state at iteration 0 when none exists yet.
With a fixed seed the iterations that follow repeat exactly what an uninterrupted run computes.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import ray

from services.run import actors, checkpoints
from services.run.faults import is_lost_actor, root_cause

log = logging.getLogger("crlhf")


def write_pids(driver: Any) -> None:
    """<run dir>/actors.json: each actor's process id (operators and fault-injection tests read it)."""
    path = driver.run_dir / "actors.json"
    path.with_suffix(".tmp").write_text(json.dumps(driver.pids, indent=1))
    path.with_suffix(".tmp").replace(path)


def call_when_back(driver: Any, handles: list[Any], method: str) -> list[Any]:
    """`handle.method()` on each actor, waiting for restarting ones. Ray answers calls to a restarting actor
    without task retries (the learner) at once with ActorUnavailableError, so those are asked again until
    fault.restart_timeout_s; an actor out of restarts raises ActorDiedError, which ends the recovery."""
    deadline = time.monotonic() + driver.config.fault.restart_timeout_s
    while True:
        try:
            return ray.get([getattr(h, method).remote() for h in handles], timeout=max(deadline - time.monotonic(), 1.0))
        except ray.exceptions.ActorUnavailableError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.5)


def refresh_pids(driver: Any) -> list[str]:
    """Actors whose process changed since they were last seen (waits for restarting ones, bounded)."""
    by_name = actors.named(driver.actors)
    now = dict(zip(by_name, call_when_back(driver, list(by_name.values()), "pid")))
    changed = [n for n, pid in now.items() if driver.pids.get(n) != pid]
    for name in changed:
        log.warning("%s was restarted (process %s → %s)", name, driver.pids.get(name), now[name])
        driver.coordinator.actor_restarted.remote(name.split("/")[0])
    driver.pids = now
    write_pids(driver)
    return changed


def recover(driver: Any, k: int, err: BaseException) -> int:
    """After iteration k failed on a lost actor: restore what was lost; returns the iteration to run next."""
    start = time.perf_counter()
    budget = driver.budget
    log.warning("iteration %d: lost an actor (%s); recovering (retry %d of %d)", k, root_cause(err), budget.used, budget.max_retries)
    driver._discard_prefetch()
    if driver._current is not None and driver._current.iteration == k:
        driver.sampler.load_state_dict(driver._current.sampler_before)  # iteration k draws the same batch again
    driver._current = None
    refresh_pids(driver)
    if call_when_back(driver, [driver.learner], "weights_version")[0] != driver.version:
        k = roll_back(driver)
    else:
        versions = call_when_back(driver, driver.rollout, "current_weights_version")
        if any(v != driver.version for v in versions):
            driver.weight_sync.sync(driver.version)
            log.info("rollout weights restored (version %d)", driver.version)
    log.warning("recovered in %.1f s; running iteration %d", time.perf_counter() - start, k)
    return k


def after_lost_sync(driver: Any, k: int, err: BaseException) -> None:
    """Iteration k committed but its weights did not reach every engine. If the learner is intact, send them
    again; if it was lost too, raise `err` so the loop rolls back (`recover`)."""
    refresh_pids(driver)
    if call_when_back(driver, [driver.learner], "weights_version")[0] != k + 1:
        raise err
    driver.weight_sync.sync(k + 1)
    log.warning("iteration %d: an engine was lost during the weight sync; weights sent again", k)


def roll_back(driver: Any) -> int:
    """Put the whole run back to its newest usable checkpoint (or iteration 0); returns the next iteration."""
    found = load_newest(driver)
    if found is not None:
        log.warning("learner lost: rolled back to %s; iterations after %d run again", found.directory, found.iteration)
        return found.iteration + 1
    if driver.origin is None:
        raise RuntimeError("the learner was lost and there is no checkpoint to roll back to")
    coordinator_state, sampler_state = driver.origin
    checkpoints.trim_metrics(driver.metrics_path, -1)
    ray.get(driver.coordinator.load_state_dict.remote(coordinator_state))
    driver.sampler.load_state_dict(sampler_state)
    driver.version = 0  # the restarted learner is the seeded initial one
    driver.weight_sync.sync(0)
    log.warning("learner lost before the first checkpoint: the run starts again from iteration 0")
    return 0


def load_newest(driver: Any) -> checkpoints.Restored | None:
    """Load the newest usable checkpoint into the learner, coordinator, sampler and engines. A checkpoint the
    learner cannot load is refused like a damaged one and the previous one is tried."""
    for found in checkpoints.candidates(driver.checkpoints):
        try:
            ray.get(driver.learner.load.remote(str(found.directory), found.iteration + 1))
        except ray.exceptions.RayTaskError as err:
            if is_lost_actor(err):
                raise
            log.warning("checkpoint refused: the learner cannot load %s (%s); trying the previous one", found.directory, root_cause(err))
            continue
        checkpoints.trim_metrics(driver.metrics_path, found.iteration)
        ray.get(driver.coordinator.load_state_dict.remote(found.coordinator))
        driver.sampler.load_state_dict(found.sampler)
        driver.version = found.iteration + 1
        driver.weight_sync.sync(found.iteration + 1)
        return found
    return None
