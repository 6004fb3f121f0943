"""Where rollout actors go on a GPU cluster: one placement group, bundles computed here (no Ray imports).

On CPU (`rollout.num_gpus == 0`) there is no plan and the actors are scheduled exactly as before, by
resource request alone. With GPUs, the bundles are reserved atomically up front (OpenRLHF's
`create_vllm_engines` does the same) so R engines either all get their GPUs or the run waits, instead of
some engines starting and holding GPUs while the rest queue behind the learner:

- tensor_parallel_size = 1: one bundle {CPU: num_cpus, GPU: num_gpus} per actor; actor r claims bundle r.
- tensor_parallel_size = P > 1: P bundles {GPU: 1} per engine (vLLM's TP workers need whole GPUs), the
  first also carrying the actor's CPUs. The actor process sits on its first bundle without a GPU of its own
  and vLLM's Ray executor (`distributed_executor_backend="ray"`, see services/rollout/vllm.py) starts one
  worker per GPU bundle inside the captured group; `VLLM_RAY_BUNDLE_INDICES` names the actor's bundles.
  `rollout.num_gpus` then only switches GPU placement on (its value is not used).

UNTESTED ON GPU (the machines this project is built on have none); tests/rollout/test_placement.py checks
the bundle arithmetic and that the CPU path has no plan.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ActorPlacement:
    """One rollout actor: the bundle its process occupies, its engine's bundles, what the process claims."""

    bundle_index: int
    engine_bundles: tuple[int, ...]
    num_cpus: float
    num_gpus: float

    def env_vars(self) -> dict[str, str]:
        """Environment for the actor: with TP, which bundles of the group vLLM's workers must use."""
        if len(self.engine_bundles) <= 1:
            return {}
        return {"VLLM_RAY_BUNDLE_INDICES": ",".join(map(str, self.engine_bundles))}


@dataclass(frozen=True)
class PlacementPlan:
    bundles: list[dict[str, float]]
    actors: list[ActorPlacement]
    strategy: str = "PACK"  # engines next to each other (and to the learner when it fits): NVLink, fewer nodes


def rollout_placement(num_actors: int, num_cpus: float, num_gpus: float, tensor_parallel_size: int) -> PlacementPlan | None:
    """The placement group for `num_actors` rollout actors, or None when no GPU is requested (CPU path)."""
    if num_gpus <= 0:
        return None
    if tensor_parallel_size == 1:
        bundles = [_bundle(num_cpus, num_gpus) for _ in range(num_actors)]
        actors = [ActorPlacement(r, (r,), num_cpus, num_gpus) for r in range(num_actors)]
        return PlacementPlan(bundles, actors)
    tp = tensor_parallel_size
    bundles, actors = [], []
    for r in range(num_actors):
        first = r * tp
        bundles += [_bundle(num_cpus, 1.0)] + [_bundle(0.0, 1.0) for _ in range(tp - 1)]
        actors.append(ActorPlacement(first, tuple(range(first, first + tp)), num_cpus, 0.0))
    return PlacementPlan(bundles, actors)


def _bundle(cpus: float, gpus: float) -> dict[str, float]:
    return {k: v for k, v in (("CPU", cpus), ("GPU", gpus)) if v > 0}
