"""Overlapped rollouts (`trainer.async_rollout=true`) and the driver's weight sync, on a real local Ray cluster."""

import json
import math

import pytest
import ray
import torch

from services.launch import main

pytestmark = pytest.mark.slow

SMOKE = ["preset=smoke", "control.port=0", "rollout.backend=hf"]


def records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_overlapped_run_trains_on_one_update_stale_batches_with_importance_weights(ray_local, tmp_path):
    assert main([*SMOKE, "trainer.async_rollout=true", "trainer.iterations=3", f"run.root={tmp_path}", "run.name=a"]) == 0
    got = records(tmp_path / "a")
    assert [r["iteration"] for r in got] == [0, 1, 2]
    # Iteration 0 generates before anything trained; 1 and 2 were generated during the previous update.
    assert [r["async/staleness"] for r in got] == [0, 1, 1]
    assert got[0]["async/is_weight_mean"] == 1.0 and got[0]["async/is_truncated_fraction"] == 0.0
    for r in got[1:]:
        w = r["async/is_weight_mean"]
        assert math.isfinite(w) and 0.0 < w <= 2.0  # truncated at trainer.async_is_cap = 2
        assert 0.0 <= r["async/is_truncated_fraction"] <= 1.0
        # A single smoke update moves the policy a little: weights near 1, not degenerate.
        assert 0.5 < w < 1.5
        assert r["ppo_steps"] > 0 and r["time/sync"] > 0


def test_synchronous_runs_sample_with_the_weights_just_synced(ray_local, tmp_path):
    """Without overlap every batch comes from the weights the learner trains (the sync ran first)."""
    assert main([*SMOKE, "trainer.iterations=3", f"run.root={tmp_path}", "run.name=s"]) == 0
    got = records(tmp_path / "s")
    assert [r["async/staleness"] for r in got] == [0, 0, 0]
    assert all("async/is_weight_mean" not in r for r in got)


def test_resuming_an_overlapped_run_repeats_the_uninterrupted_run(ray_local, tmp_path):
    """Periodic checkpoints are drain points, so a run stopped at one and resumed matches a straight run."""
    common = [*SMOKE, "trainer.async_rollout=true", "checkpoint.every=2", "evaluation.every=0", f"run.root={tmp_path}"]
    assert main([*common, "trainer.iterations=4", "run.name=straight"]) == 0
    assert main([*common, "trainer.iterations=2", "run.name=stopped"]) == 0
    assert main([f"resume={tmp_path / 'stopped'}", "trainer.iterations=4"]) == 0
    straight, resumed = records(tmp_path / "straight"), records(tmp_path / "stopped")
    assert [r["async/staleness"] for r in straight] == [0, 1, 0, 1]  # no prefetch across the checkpoint after 1
    assert [r["iteration"] for r in resumed] == [0, 1, 2, 3]
    for a, b in zip(straight, resumed):
        for key in ("async/staleness", "async/is_weight_mean", "reward/meteor", "kl", "policy_loss", "tokens"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), (a["iteration"], key)


def test_the_driver_syncs_learner_weights_into_the_rollout_actor_through_the_object_store(ray_local, tmp_path):
    from services.data.dialogues import load_examples
    from services.driver import Driver
    from services.config.overrides import build_config
    from services.rollout.weight_sync import ObjectStoreWeightSync

    config = build_config([*SMOKE, "evaluation.every=0", "trainer.learning_rate=1e-2"])
    driver = Driver(config, tmp_path, load_examples(config.data, "train"))
    try:
        assert isinstance(driver.weight_sync, ObjectStoreWeightSync)
        probe = driver.sampler.next_batch(4)
        before = ray.get(driver.rollout[0].generate.remote(probe, seed=5))
        driver.iteration(0)
        after = ray.get(driver.rollout[0].generate.remote(probe, seed=5))
        assert before.weights_version == 0
        assert after.weights_version == ray.get(driver.learner.weights_version.remote()) == 1
        # Same prompts, same seed: only the weights differ, and the engine's log-probs show it.
        changed = [
            torch.tensor(a[:n]) - torch.tensor(b[:n])
            for a, b, n in zip(before.generation.logprobs, after.generation.logprobs,
                               (min(len(x), len(y)) for x, y in zip(before.generation.logprobs, after.generation.logprobs)))
        ]
        assert max(float(c.abs().max()) for c in changed) > 1e-4
    finally:
        driver.close()
