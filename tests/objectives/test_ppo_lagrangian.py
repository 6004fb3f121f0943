"""`ppo_lagrangian` (§11, safe-rlhf PPO-Lag): λ update, advantage, streams, state, bandit."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from services.objectives.base import RolloutTensors

from .bandit import SoftmaxPolicy, make_objective, run

# A cost model scoring c directly: direction le with θ = d = 0 makes the cost c − 0.
COST_ONLY = {"helpful": {}, "harm": {"threshold": 0.0, "direction": "le"}}


def scores_only(scores: list[list[float]]) -> RolloutTensors:
    b = len(scores)
    return RolloutTensors(torch.tensor(scores), torch.zeros(b, 1), torch.zeros(b, 1), torch.ones(b, 1))


@pytest.mark.parametrize(("mean_cost", "expected"), [(0.5, 1.051271), (-0.2, 0.980199)])
def test_lambda_step_from_one(mean_cost: float, expected: float) -> None:
    obj = make_objective("ppo_lagrangian", COST_ONLY)
    obj.build_streams(scores_only([[0.0, mean_cost]]))
    obj.mix_advantages(torch.zeros(2, 2))  # the start of a PPO step takes the λ step
    assert math.exp(float(obj.log_lambda[0])) == pytest.approx(expected, abs=1e-6)
    assert obj.metrics()["multiplier/harm"] == pytest.approx(expected, abs=1e-6)
    assert obj.metrics()["cost/harm"] == pytest.approx(mean_cost)


def test_advantage_mix_with_lambda_detached() -> None:
    obj = make_objective("ppo_lagrangian", COST_ONLY, delay=10**9)  # λ stays at 1
    mixed = obj.mix_advantages(torch.tensor([[1.0, 0.5]]))
    assert float(mixed[0]) == pytest.approx(0.25)
    two = make_objective("ppo_lagrangian", {"r": {}, "c1": {"threshold": 0.0, "direction": "le"}, "c2": {"threshold": 0.0, "direction": "le"}}, delay=10**9)
    assert float(two.mix_advantages(torch.tensor([[1.0, 0.5, 0.25]]))[0]) == pytest.approx((1 - 0.5 - 0.25) / 3)


def test_window_delay_clamp_and_threshold_changes() -> None:
    obj = make_objective("ppo_lagrangian", COST_ONLY, cost_window=4, delay=1, lambda_max=1.02)
    obj.build_streams(scores_only([[0.0, 1.0]] * 3))
    obj.build_streams(scores_only([[0.0, 0.0]] * 2))  # window keeps the last 4: mean cost 0.5
    assert float(obj.mean_cost()[0]) == pytest.approx(0.5)
    obj.mix_advantages(torch.zeros(1, 2))  # step 0 < delay: no update
    assert float(obj.log_lambda[0]) == 0.0
    obj.mix_advantages(torch.zeros(1, 2))
    assert math.exp(float(obj.log_lambda[0])) == pytest.approx(1.02)  # 1.051 clamped to λ_max
    obj.set_threshold("harm", 0.5)  # the window stores scores, so the new threshold applies at once
    assert float(obj.mean_cost()[0]) == pytest.approx(0.0)


def test_ge_constraint_cost_streams_and_ppo_settings() -> None:
    obj = make_objective("ppo_lagrangian", {"meteor": {"weight": 2.0}, "intent": {"threshold": 0.48}}, kl_coef=0.1, score_clip=1.0)
    assert obj.stream_names == ["reward", "cost/intent"]
    assert obj.discount(0.99, 0.95) == (1.0, 0.95) and obj.value_clip == 5.0
    torch.testing.assert_close(obj.value_coefficients(), torch.tensor([0.5, 0.5]))
    batch = RolloutTensors(torch.tensor([[0.3, 1.0]]), torch.tensor([[2.0, 0.5]]), torch.zeros(1, 2), torch.ones(1, 2))
    streams = obj.build_streams(batch).rewards[0]
    # reward: −β k + 2·0.3 at T; cost: +β k + (0.48 − 1) at T; both clipped to ±1
    torch.testing.assert_close(streams, torch.tensor([[-0.2, 0.2], [-0.05 + 0.6, 0.05 - 0.52]]))
    clipped = obj.build_streams(RolloutTensors(torch.tensor([[30.0, -30.0]]), torch.zeros(1, 1), torch.zeros(1, 1), torch.ones(1, 1)))
    torch.testing.assert_close(clipped.rewards[0, 0], torch.tensor([1.0, 1.0]))


def test_state_round_trip_and_validation() -> None:
    obj = make_objective("ppo_lagrangian", COST_ONLY)
    obj.build_streams(scores_only([[0.0, 0.3], [0.0, 0.1]]))
    obj.mix_advantages(torch.zeros(1, 2))
    clone = make_objective("ppo_lagrangian", COST_ONLY)
    clone.load_state_dict(obj.state_dict())
    for o in (obj, clone):
        o.build_streams(scores_only([[0.0, 0.7]]))
        o.mix_advantages(torch.zeros(1, 2))
    torch.testing.assert_close(clone.log_lambda, obj.log_lambda)
    assert clone.global_step == obj.global_step == 2 and list(clone.window) == list(obj.window)
    with pytest.raises(ValueError, match="at least one constraint"):
        make_objective("ppo_lagrangian", {"a": {}})
    with pytest.raises(ValueError, match="'harm'.*eq"):
        make_objective("ppo_lagrangian", {"a": {}, "harm": {"threshold": 0.0, "direction": "eq"}})
    with pytest.raises(ValueError, match="nope"):
        make_objective("ppo_lagrangian", COST_ONLY, constraints=["nope"])


def bandit(lr: float, iterations: int, seed: int, **options: object) -> float:
    """Arm A: reward 1, cost 1; arm B: reward 0.5, cost 0; d = 0.3; REINFORCE with mean baselines, batch 64."""
    arms = np.array([[1.0, 1.0], [0.5, 0.0]])
    rewards = {"reward": {}, "cost": {"threshold": 0.3, "direction": "le"}}
    obj = make_objective("ppo_lagrangian", rewards, center_advantage=True, kl_coef=0.0, **options)
    history = run(obj, SoftmaxPolicy(2), arms, seed=seed, iterations=iterations, batch=64, lr=lr)
    return float(np.mean(np.array(history)[-1000:, 0]))


@pytest.mark.parametrize("seed", [0, 1])
def test_bandit_cost_constraint_holds_p_a_near_d(seed: int) -> None:
    assert 0.25 <= bandit(0.1, 3000, seed) <= 0.35


def test_bandit_slower_policy_with_lambda_max() -> None:
    assert 0.25 <= bandit(0.05, 6000, 0, lambda_max=5.0) <= 0.35


def test_bandit_without_lambda_max_diverges() -> None:
    """Why `lambda_max` defaults to 5: the multiplicative update overflows at policy lr 0.05 (§11)."""
    from .bandit import ppo_iteration

    arms = np.array([[1.0, 1.0], [0.5, 0.0]])
    obj = make_objective("ppo_lagrangian", {"reward": {}, "cost": {"threshold": 0.3, "direction": "le"}}, center_advantage=True, kl_coef=0.0, lambda_max=None)
    policy, rng = SoftmaxPolicy(2), np.random.default_rng(0)
    diverged = False
    with np.errstate(all="ignore"):
        for _ in range(6000):
            try:
                ppo_iteration(obj, policy, arms, rng, batch=64, lr=0.05)
            except ValueError:  # probabilities became NaN
                diverged = True
                break
            if float(obj.log_lambda[0]) > 50:
                diverged = True
                break
    assert diverged
