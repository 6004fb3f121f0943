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
    # A coordinator that dies (e.g. killed by the OOM killer) is restarted by Ray and reloads coordinator.pt,
    # so queued REST changes and the audit log survive; the call in flight fails and the driver reports it.
    coordinator = Coordinator.options(num_cpus=0, scheduling_strategy=here, max_restarts=3).remote(config, str(run_dir))
    options, group = _rollout_options(config)
    rollout = [RolloutActor.options(**o).remote(config, rank) for rank, o in enumerate(options)]
    rewards = [
        RewardActor.options(num_cpus=config.reward_actors.num_cpus, num_gpus=config.reward_actors.num_gpus).remote(g)
        for g in reward_groups(config)
    ]
    learner = LearnerActor.options(num_cpus=config.learner.num_cpus, num_gpus=config.learner.num_gpus).remote(config)
    return Actors(coordinator, rollout, rewards, learner, group)


def _rollout_options(config: RootConfig) -> tuple[list[dict[str, Any]], Any]:
    """Ray options per rollout actor: plain resource requests on CPU; on GPU, a bundle of one placement group
    reserved for all of them."""
    r = config.rollout
    plan = rollout_placement(r.num_actors, r.num_cpus, r.num_gpus, r.tensor_parallel_size)
    if plan is None:
        return [{"num_cpus": r.num_cpus, "num_gpus": r.num_gpus} for _ in range(r.num_actors)], None
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
            **({"runtime_env": {"env_vars": a.env_vars()}} if a.env_vars() else {}),
        }
        for a in plan.actors
    ]
    return options, group
