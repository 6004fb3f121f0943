"""Resource checks before any actor starts: the message names the cluster's count, the run's need per actor
group, and a fix that works."""

from services.config.overrides import build_config
from services.run.preflight import check_cluster, needs


def test_a_smoke_run_on_a_two_cpu_head_is_refused_with_the_fix():
    wanted = needs(build_config(["preset=smoke"]), reward_actors=2)
    message = check_cluster(wanted, {"CPU": 2.0})
    assert message == (
        "this cluster has 2 CPUs, the run needs 2.5 (rollout (1 actor) 1, reward (2 actors) 0.5, learner 1): "
        "start Ray with --num-cpus=3 (logical CPUs only gate scheduling; the phases take turns), "
        "or lower rollout.num_cpus (e.g. rollout.num_cpus=0.5)"
    )
    assert check_cluster(wanted, {"CPU": 3.0}) is None


def test_missing_gpus_are_named():
    wanted = needs(build_config(["preset=smoke", "learner.num_gpus=1"]), reward_actors=2)
    assert "has 0 GPUs, the run needs 1 (learner 1)" in check_cluster(wanted, {"CPU": 8.0})
