"""Start a run's actors: the coordinator (pinned to this node, restartable), the rollout actors (a GPU
placement group when they need GPUs, services/rollout/placement.py), one reward actor per reward group, and
the learner."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from services.actors.common import LOG_FILE_ENV
from services.actors.coordinator import Coordinator
from services.actors.learner import LearnerActor
from services.actors.reward import RewardActor
from services.actors.rollout import RolloutActor
from services.config.schema import RootConfig
from services.rollout.placement import rollout_placement

log = logging.getLogger("crlhf")


@dataclass
class Actors:
    coordinator: Any
    rollout: list[Any]
    rewards: list[Any]
    learner: Any
    placement_group: Any = None  # the rollout actors' GPU placement group, if any

    def all(self) -> list[Any]:
        return [self.coordinator, self.learner, *self.rollout, *self.rewards]


def reward_groups(config: RootConfig) -> list[dict[str, Any]]:
    """Rewards grouped by `rewards.*.actor`; one reward actor per non-empty group."""
    groups: dict[int, dict[str, Any]] = {}
    for name, reward in config.rewards.items():
        groups.setdefault(reward.actor, {})[name] = reward
    return [groups[k] for k in sorted(groups)]


def start(config: RootConfig, run_dir: Path) -> Actors:
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    # Each actor is told its own run's train.log (services/actors/common.py) per actor, not per job: a process
    # that runs several runs on one Ray connection (a study, a notebook, the tests) keeps their logs apart.
    # Ray merges these env_vars into the job's runtime_env.
    log_env = {LOG_FILE_ENV: str((run_dir / "train.log").resolve())}
    runtime_env = {"env_vars": log_env}
    # A coordinator that dies (e.g. killed by the OOM killer) is restarted by Ray and reloads coordinator.pt,
    # so queued REST changes and the audit log survive; the call in flight fails and the driver reports it.
    coordinator = Coordinator.options(num_cpus=0, scheduling_strategy=here, max_restarts=3,
                                      runtime_env=runtime_env).remote(config, str(run_dir))
    # Lost actors come back (Ray restarts them, up to fault.actor_restarts times). Scoring and generation with
    # an explicit seed are idempotent, so Ray may re-run them on the new process; a generation retried there
    # fails on its weights version, and the driver re-sends the weights (services/run/faults.py). Training is
    # not idempotent: a lost learner is rolled back to the last checkpoint instead.
    restarts = config.fault.actor_restarts
    options, group = _rollout_options(config, log_env)
    where = config.placement  # custom resources: which nodes each group may run on
    rollout = [RolloutActor.options(**o, **_custom(where.rollout), max_restarts=restarts, max_task_retries=restarts).remote(config, rank)
               for rank, o in enumerate(options)]
    rewards = [
        RewardActor.options(num_cpus=config.reward_actors.num_cpus, num_gpus=config.reward_actors.num_gpus, **_custom(where.reward),
                            max_restarts=restarts, max_task_retries=restarts, runtime_env=runtime_env
                            ).remote(g, config.fault.reward_on_error)
        for g in reward_groups(config)
    ]
    learner = LearnerActor.options(num_cpus=config.learner.num_cpus, num_gpus=config.learner.num_gpus, **_custom(where.learner),
                                   max_restarts=restarts, runtime_env=runtime_env).remote(config)
    return Actors(coordinator, rollout, rewards, learner, group)


class ActorsPending(RuntimeError):
    """Some actors could not be placed in time; the message names them and what they asked for."""


def named(actors: Actors) -> dict[str, Any]:
    """Every actor under a stable name: coordinator, learner, rollout/0 …, reward/0 …"""
    return {"coordinator": actors.coordinator, "learner": actors.learner,
            **{f"rollout/{i}": a for i, a in enumerate(actors.rollout)}, **{f"reward/{i}": a for i, a in enumerate(actors.rewards)}}


def _custom(resources: dict[str, float]) -> dict[str, Any]:
    return {"resources": dict(resources)} if resources else {}


def asks(config: RootConfig) -> dict[str, dict[str, float]]:
    """What each actor kind asks Ray for (the same numbers `start` passes)."""
    where = config.placement
    return {"coordinator": {},
            "learner": {"CPU": config.learner.num_cpus, "GPU": config.learner.num_gpus, **where.learner},
            "rollout": {"CPU": config.rollout.num_cpus, "GPU": config.rollout.num_gpus, **where.rollout},
            "reward": {"CPU": config.reward_actors.num_cpus, "GPU": config.reward_actors.num_gpus, **where.reward}}


def unplaced(handle: Any) -> bool:
    """True while Ray has no worker process for the actor yet (Pid 0 in the GCS actor table). That is also
    briefly true while a placed actor's worker starts, so callers combine it with the resources check and
    a grace period; an actor in its constructor (loading a model, compiling an engine) has a Pid already.

    Ray's public ray.util.state needs the dashboard, which local runs leave off; the GCS actor table behind
    it (ray._private.state) answers without it. Unknown (an API change) counts as placed: never a false stop."""
    try:
        from ray._private import state

        entry = state.actors(handle._actor_id.hex())
        return entry.get("State") in ("PENDING_CREATION", "DEPENDENCIES_UNREADY") and not entry.get("Pid")
    except Exception:  # noqa: BLE001 - a private API; see above
        return False


def unmet_demands() -> list[dict[str, float]] | None:
    """Resource requests the cluster's schedulers hold because no node can serve them now (what the
    autoscaler reads), or None when Ray cannot say (then free resources are the fallback test)."""
    try:
        from ray.autoscaler.v2.sdk import get_cluster_status

        status = get_cluster_status(ray.get_runtime_context().gcs_address)
        return [dict(r.bundle) for d in status.resource_demands.ray_task_actor_demand for r in d.bundles_by_count]
    except Exception:  # noqa: BLE001 - an SDK Ray marks as alpha; never let it break a run
        return None


def _waits(ask: dict[str, float], free: dict[str, float], demands: list[dict[str, float]] | None) -> bool:
    """Is a request without a worker held for lack of resources? A placed actor whose worker is still starting
    must not count: the unmet demands list only the requests no node can serve."""
    wanted = {k: v for k, v in ask.items() if v}
    if demands is not None:
        return any(set(d) == set(wanted) and all(abs(d[k] - v) < 1e-6 for k, v in wanted.items()) for d in demands)
    return not all(free.get(k, 0.0) + 1e-9 >= v for k, v in wanted.items())


def wait_ready(actors: Actors, config: RootConfig, on_wait: Any = None, poll_s: float = 1.0, grace_s: float = 5.0) -> dict[str, int]:
    """Wait until every actor runs; returns each one's process id.

    Ray keeps an actor it cannot place in PENDING_CREATION forever. An actor without a worker whose request
    is among the cluster's unmet resource demands counts as waiting for resources; one still waiting after
    run.actor_start_timeout_s ends the wait with an ActorsPending naming the actors, what they asked for and
    what the cluster has free. After `grace_s` of waiting, `on_wait(names)` is called once (the driver tells
    the coordinator: /v1/status says 'waiting for resources'). Placed actors may take as long as their
    constructors need; one whose constructor raised ends the wait with that error."""
    import time

    by_name = named(actors)
    wants = asks(config)
    refs = {by_name[n].pid.remote(): n for n in by_name}
    since: dict[str, float] = {}  # when each actor was first seen waiting
    pids: dict[str, int] = {}
    told = False
    while refs:
        ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=poll_s)
        for ref in ready:
            pids[refs.pop(ref)] = ray.get(ref)  # raises the constructor's error, if any
        if not refs:
            break
        now, free, demands = time.monotonic(), ray.available_resources(), unmet_demands()
        waiting = sorted(n for n in refs.values() if _waits(wants[n.split("/")[0]], free, demands) and unplaced(by_name[n]))
        since = {n: since.get(n, now) for n in waiting}
        if waiting and not told and on_wait is not None and now - min(since.values()) >= grace_s:
            on_wait(waiting)
            told = True
        late = [n for n in waiting if now - since[n] >= config.run.actor_start_timeout_s]
        if late:
            raise ActorsPending(pending_message(late, config, free))
    return pids


def pending_message(waiting: list[str], config: RootConfig, free: dict[str, float]) -> str:
    """One message: which actors wait, what each asked for, what the cluster has free, and the fix."""
    wants = asks(config)
    parts = []
    for name in waiting:
        ask = {k: v for k, v in wants[name.split("/")[0]].items() if v}
        shown = ", ".join(f"{k} {v:g}" for k, v in ask.items()) or "no resources"
        short = [f"{k} (free {free.get(k, 0.0):g})" for k, v in ask.items() if free.get(k, 0.0) + 1e-9 < v]
        parts.append(f"{name} asks for {shown}" + (f"; short of {', '.join(short)}" if short else ""))
    return (f"actors still waiting for resources after run.actor_start_timeout_s={config.run.actor_start_timeout_s:g} s: "
            + "; ".join(parts) + ". Add nodes with those resources, lower the actors' requests (e.g. learner.num_cpus), "
            "or raise run.actor_start_timeout_s if the cluster is still scaling up")


def _rollout_options(config: RootConfig, env_vars: dict[str, str]) -> tuple[list[dict[str, Any]], Any]:
    """Ray options per rollout actor: plain resource requests on CPU; on GPU, a bundle of one placement group
    reserved for all of them. Every actor gets `env_vars` (plus its device's, on GPU)."""
    r = config.rollout
    plan = rollout_placement(r.num_actors, r.num_cpus, r.num_gpus, r.tensor_parallel_size)
    if plan is None:
        return [{"num_cpus": r.num_cpus, "num_gpus": r.num_gpus, "runtime_env": {"env_vars": dict(env_vars)}}
                for _ in range(r.num_actors)], None
    from ray.util.placement_group import placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    group = placement_group(plan.bundles, strategy=plan.strategy)
    log.info("waiting for the rollout placement group: %s", plan.bundles)
    ray.get(group.ready())
    options = [
        {
            "num_cpus": a.num_cpus,
            "num_gpus": a.num_gpus,
            "scheduling_strategy": PlacementGroupSchedulingStrategy(
                placement_group=group,
                placement_group_bundle_index=a.bundle_index,
                placement_group_capture_child_tasks=True,  # vLLM's TP workers land in the same group
            ),
            "runtime_env": {"env_vars": {**env_vars, **a.env_vars()}},
        }
        for a in plan.actors
    ]
    return options, group
