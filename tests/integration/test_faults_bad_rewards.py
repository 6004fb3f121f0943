"""A reward that gives NaN/inf for some samples, through real smoke runs (real Ray, real actors):
rewards.on_error=fail stops naming the reward, iteration and sample; skip drops them and counts them.
The reward kind `nan_at` is a real RewardFunction registered for the test (tests/faults/fault_rewards.py)."""

from __future__ import annotations

import math

import pytest

from tests.faults.harness import SMOKE, records, run

pytestmark = pytest.mark.slow
BAD = ["rewards.bad.kind=nan_at", "rewards.bad.params.samples=[3,6]", "rewards.bad.actor=0", "trainer.iterations=2"]


def test_fail_names_the_reward_the_iteration_and_the_sample(tmp_path):
    code, out = run([*SMOKE, *BAD, f"run.root={tmp_path}", "run.name=fail"], module="tests.faults.runner")
    assert code == 1, out
    assert "reward 'bad' at iteration 0, sample 3 of 8 (prompt '" in out and "(1 more samples failed too)" in out, out
    assert "rewards.on_error=skip" in out and "no iteration completed" in out
    assert "Traceback" not in out
    assert records(tmp_path / "fail") == []


def test_skip_drops_the_samples_from_the_update_and_counts_them(tmp_path):
    code, out = run([*SMOKE, *BAD, "rewards.on_error=skip", "rewards.bad.params.value=.inf", f"run.root={tmp_path}", "run.name=skip"],
                    module="tests.faults.runner")
    assert code == 0, out
    got = records(tmp_path / "skip")
    assert [r["iteration"] for r in got] == [0, 1]
    for r in got:
        assert r["rewards/skipped"] == 2 and r["rewards/skipped/bad"] == 2 and r["rewards/skipped/topic"] == 0
        assert math.isfinite(r["reward/bad"]) and math.isfinite(r["policy_loss"]) and r["ppo_steps"] > 0
