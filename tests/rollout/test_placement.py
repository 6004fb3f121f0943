"""Placement of rollout actors: no placement group on CPU, bundle arithmetic on GPU (which cannot run here)."""

from services.rollout.placement import rollout_placement


def test_cpu_runs_get_no_placement_group():
    assert rollout_placement(num_actors=3, num_cpus=1.0, num_gpus=0.0, tensor_parallel_size=1) is None
    assert rollout_placement(num_actors=1, num_cpus=1.0, num_gpus=0.0, tensor_parallel_size=4) is None


def test_one_bundle_per_engine_without_tensor_parallelism():
    plan = rollout_placement(num_actors=2, num_cpus=2.0, num_gpus=0.5, tensor_parallel_size=1)
    assert plan.bundles == [{"CPU": 2.0, "GPU": 0.5}, {"CPU": 2.0, "GPU": 0.5}]
    assert [(a.bundle_index, a.engine_bundles, a.num_cpus, a.num_gpus) for a in plan.actors] == [(0, (0,), 2.0, 0.5), (1, (1,), 2.0, 0.5)]
    assert all(a.env_vars() == {} for a in plan.actors)


def test_tensor_parallel_engines_get_whole_gpus_and_their_own_bundle_indices():
    plan = rollout_placement(num_actors=2, num_cpus=1.0, num_gpus=1.0, tensor_parallel_size=2)
    # Per engine: the actor's CPU + one GPU, then one more GPU; the actor process itself claims no GPU.
    assert plan.bundles == [{"CPU": 1.0, "GPU": 1.0}, {"GPU": 1.0}] * 2
    assert sum(b.get("GPU", 0) for b in plan.bundles) == 4
    first, second = plan.actors
    assert (first.bundle_index, first.engine_bundles, first.num_gpus) == (0, (0, 1), 0.0)
    assert (second.bundle_index, second.engine_bundles) == (2, (2, 3))
    assert second.env_vars() == {"VLLM_RAY_BUNDLE_INDICES": "2,3"}
