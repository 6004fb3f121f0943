"""Checks a run makes against the cluster before any actor starts (pure: the caller passes Ray's numbers).

A run whose actors ask for more CPUs or GPUs than the cluster has would wait forever with its learner in
PENDING_CREATION; this says so at once, naming the resource and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.config.schema import RootConfig


@dataclass(frozen=True)
class Need:
    group: str  # e.g. "rollout (1 actor)"
    setting: str  # the config key that sets it, e.g. "rollout.num_cpus"
    cpus: float
    gpus: float


def needs(config: RootConfig, reward_actors: int) -> list[Need]:
    r, learner, rewards = config.rollout, config.learner, config.reward_actors
    return [
        Need(f"rollout ({r.num_actors} actor{'s' * (r.num_actors > 1)})", "rollout.num_cpus", r.num_cpus * r.num_actors, r.num_gpus * r.num_actors),
        Need(f"reward ({reward_actors} actor{'s' * (reward_actors > 1)})", "reward_actors.num_cpus", rewards.num_cpus * reward_actors,
             rewards.num_gpus * reward_actors),
        Need("learner", "learner.num_cpus", learner.num_cpus, learner.num_gpus),
    ]


def check_cluster(wanted: list[Need], resources: dict[str, float]) -> str | None:
    """None when the cluster can hold every actor at once, else one message naming what is short and the fix."""
    for key, unit in (("CPU", "cpus"), ("GPU", "gpus")):
        total = sum(getattr(n, unit) for n in wanted)
        have = float(resources.get(key, 0.0))
        if total > have + 1e-9:
            parts = ", ".join(f"{n.group} {getattr(n, unit):g}" for n in wanted if getattr(n, unit))
            if key == "CPU":
                biggest = max(wanted, key=lambda n: n.cpus)
                fix = (f"start Ray with --num-cpus={_ceil(total)} (logical CPUs only gate scheduling; the phases take turns), "
                       f"or lower {biggest.setting} (e.g. {biggest.setting}={max(biggest.cpus - (total - have), 0):g})")
            else:
                fix = "add GPU nodes, or set rollout.num_gpus / learner.num_gpus / reward_actors.num_gpus to fit"
            return f"this cluster has {have:g} {key}s, the run needs {total:g} ({parts}): {fix}"
    return None


def _ceil(value: float) -> int:
    whole = int(value)
    return whole if whole == value else whole + 1
