"""`ppo` (§1), `ppo_sat` (§2) and `fast_rl` (§8): sanity numbers and bandit behaviour."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from services.objectives.base import RolloutTensors

from .bandit import SoftmaxPolicy, make_objective, run

DEFAULT_REWARDS = {"meteor": {"weight": 0.5, "threshold": 0.23}, "intent": {"weight": 1.0, "threshold": 0.48}}


def rollout(scores: list[list[float]], kl: list[list[float]]) -> RolloutTensors:
    kl_t = torch.tensor(kl)
    return RolloutTensors(torch.tensor(scores), kl_t, torch.zeros_like(kl_t), torch.ones_like(kl_t))


# --- ppo ---------------------------------------------------------------------------------------------


def test_ppo_stream_uses_current_beta_then_controller_steps() -> None:
    obj = make_objective("ppo", DEFAULT_REWARDS)
    streams = obj.build_streams(rollout([[0.2, 1.0]], [[0.3, 0.3, 0.3]]))
    # terminal 0.5·0.2 + 1.0·1 = 1.1; each token −β·k = −0.2·0.3 = −0.06
    torch.testing.assert_close(streams.rewards[0, :, 0], torch.tensor([-0.06, -0.06, -0.06 + 1.1]))
    assert obj.metrics()["kl_coef"] == pytest.approx(0.196)  # KL̄ 0.3 < 0.5: e clipped to −0.2, for the next rollout


def test_ppo_kl_mean_is_per_token_over_the_rollout() -> None:
    obj = make_objective("ppo", DEFAULT_REWARDS)
    batch = RolloutTensors(
        torch.zeros(2, 2), torch.tensor([[1.0, 1.0, 9.0], [1.0, 0.0, 0.0]]), torch.zeros(2, 3),
        torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]]),
    )
    obj.build_streams(batch)
    assert obj.metrics()["mean_kl"] == pytest.approx(1.0)  # padding ignored, 3 tokens
    assert obj.metrics()["kl_coef"] == pytest.approx(0.204)


def test_ppo_bandit_fixed_beta_converges_to_tilted_optimum() -> None:
    arms = np.array([[1.0], [0.0], [0.5]])
    obj = make_objective("ppo", {"r": {"weight": 1.0}}, kl_coef=0.5, target_kl=None, normalize_advantage=False)
    policy = SoftmaxPolicy(3)
    run(obj, policy, arms, seed=0, iterations=3000, batch=256, lr=0.1)
    target = np.exp(np.array([1.0, 0.0, 0.5]) / 0.5) / np.exp(np.array([1.0, 0.0, 0.5]) / 0.5).sum()
    np.testing.assert_allclose(target, [0.6652, 0.0900, 0.2447], atol=5e-5)
    np.testing.assert_allclose(policy.probs, target, atol=5e-5)  # 4 decimals


def test_ppo_bandit_adaptive_beta_tracks_kl_target() -> None:
    arms = np.array([[1.0], [0.0], [0.5]])
    windows = []
    for seed in range(3):
        obj = make_objective("ppo", {"r": {"weight": 1.0}}, kl_coef=0.2, target_kl=0.1)
        policy = SoftmaxPolicy(3)
        kls = run(obj, policy, arms, seed=seed, iterations=3000, batch=256, lr=0.1, record=lambda p, _o: p.kl())
        windows.append(float(np.mean(kls[-500:])))
    # One 500-iteration window wanders by about ±0.0012 around the target (slow β); the seed mean is tight.
    assert 0.099 <= np.mean(windows) <= 0.101, windows
    assert all(0.097 <= w <= 0.103 for w in windows), windows


# --- ppo_sat -----------------------------------------------------------------------------------------


def test_ppo_sat_reward_value() -> None:
    obj = make_objective("ppo_sat", {"meteor": {"weight": 1.0, "threshold": 0.23}, "intent": {"weight": 1.0, "threshold": 0.48}})
    streams = obj.build_streams(rollout([[0.25, 1.0]], [[0.0]]))
    assert float(streams.rewards[0, 0, 0]) == pytest.approx(-0.2708, abs=1e-6)


def test_ppo_sat_requires_thresholds() -> None:
    with pytest.raises(ValueError, match="intent"):
        make_objective("ppo_sat", {"meteor": {"threshold": 0.23}, "intent": {}})


def test_ppo_sat_warns_once_about_binary_reward(caplog: pytest.LogCaptureFixture) -> None:
    obj = make_objective("ppo_sat", {"intent": {"threshold": 0.48}})
    with caplog.at_level(logging.WARNING, logger="services.objectives.composite"):
        for _ in range(3):
            obj.build_streams(rollout([[1.0], [0.0]], [[0.0], [0.0]]))
    assert len([r for r in caplog.records if "intent" in r.getMessage()]) == 1


def test_ppo_sat_bandit_binary_target_below_half_drives_accuracy_down() -> None:
    arms = np.array([[1.0], [0.0]])  # arm 0: correct intent
    obj = make_objective("ppo_sat", {"intent": {"threshold": 0.48}}, kl_coef=0.0, normalize_advantage=False)
    policy = SoftmaxPolicy(2)
    history = np.array(run(obj, policy, arms, seed=0, iterations=2000, batch=128, lr=1.0))[:, 0]
    assert history[499] > history[999] > history[1999]
    assert history[-1] == pytest.approx(0.007, abs=0.002)


# --- fast_rl -----------------------------------------------------------------------------------------


def test_fast_rl_weights_and_composite_match_spec() -> None:
    obj = make_objective("fast_rl", {"a": {}, "b": {}})
    streams = obj.build_streams(rollout([[0.2, 0.9]], [[0.0]]))
    torch.testing.assert_close(obj.mixture, torch.tensor([0.668188, 0.331812]), atol=1e-6, rtol=0)
    assert float(streams.rewards[0, 0, 0]) == pytest.approx(0.432269, abs=1e-6)  # same batch uses the new w
    obj.build_streams(rollout([[0.2, 0.9]], [[0.0]]))
    torch.testing.assert_close(obj.mixture, torch.tensor([0.802184, 0.197816]), atol=1e-6, rtol=0)
    assert obj.metrics()["weight/a"] == pytest.approx(0.802184, abs=1e-6)


@pytest.mark.parametrize(
    ("options", "means", "expected"),
    [
        ({"bias": {"b": 0.5}}, [0.2, 0.9], [0.549834, 0.450166]),
        ({"step_size": -1.0}, [0.2, 0.9], [0.331812, 0.668188]),  # the pseudo-code's exp(+λr)
        ({"step_size": 2.0}, [0.1, 0.5, 0.9], [0.605611, 0.272118, 0.122271]),
    ],
)
def test_fast_rl_update_variants(options: dict, means: list[float], expected: list[float]) -> None:
    obj = make_objective("fast_rl", {k: {} for k in "abc"[: len(means)]}, **options)
    obj.update_weights(torch.tensor([means]))
    torch.testing.assert_close(obj.mixture, torch.tensor(expected), atol=1e-6, rtol=0)


def test_fast_rl_smoothing_and_state_round_trip() -> None:
    obj = make_objective("fast_rl", {"a": {}, "b": {}}, smoothing="ema", smoothing_rate=0.5)
    obj.update_weights(torch.tensor([[0.2, 0.9]]))  # first batch sets m
    obj.update_weights(torch.tensor([[0.4, 0.5]]))  # m = (0.3, 0.7)
    expected = torch.softmax(torch.tensor([-0.5, -1.6]), 0)
    torch.testing.assert_close(obj.mixture, expected)
    clone = make_objective("fast_rl", {"a": {}, "b": {}}, smoothing="ema", smoothing_rate=0.5)
    clone.load_state_dict(obj.state_dict())
    obj.update_weights(torch.tensor([[0.1, 0.1]]))
    clone.update_weights(torch.tensor([[0.1, 0.1]]))
    torch.testing.assert_close(clone.mixture, obj.mixture)
    clipped = make_objective("fast_rl", {"a": {}, "b": {}}, smoothing="clip", clip_low=0.0, clip_high=0.5)
    clipped.update_weights(torch.tensor([[0.2, 0.9]]))
    torch.testing.assert_close(clipped.mixture, torch.softmax(torch.tensor([-0.2, -0.5]), 0))


def test_fast_rl_rejects_bias_for_unknown_reward() -> None:
    with pytest.raises(ValueError, match="zzz"):
        make_objective("fast_rl", {"a": {}}, bias={"zzz": 1.0})


def _p_fair(step_size: float) -> tuple[float, np.ndarray]:
    arms = np.array([[1.0, 0.0], [0.45, 0.45]])  # A: high disparity, B: fair
    obj = make_objective(
        "fast_rl", {"r1": {}, "r2": {}}, step_size=step_size, kl_coef=0.0, normalize_advantage=False, max_weight_ratio=None
    )
    policy = SoftmaxPolicy(2)
    run(obj, policy, arms, seed=0, iterations=500, batch=64, lr=0.5)
    return float(policy.probs[1]), obj.mixture.numpy()


def test_fast_rl_weight_ratio_cap_keeps_every_reward_in_play_and_lets_it_recover() -> None:
    capped = make_objective("fast_rl", {"a": {}, "b": {}, "c": {}})  # default: w_max / w_min ≤ 10
    uncapped = make_objective("fast_rl", {"a": {}, "b": {}, "c": {}}, max_weight_ratio=None)
    lagging = torch.tensor([[-0.4, 0.1, 0.7]])  # reward a stays worst, as an offset length reward does
    for _ in range(12):
        capped.update_weights(lagging)
        uncapped.update_weights(lagging)
    assert float(uncapped.mixture[0]) > 0.99  # Eq. (4): one-hot on the worst reward
    w = capped.mixture
    assert float(w.max() / w.min()) == pytest.approx(10.0, rel=1e-5)
    assert float(w[1]) > 0.05 and float(w[2]) > 0.05
    for _ in range(3):  # a stops being worst: within a few updates it no longer holds the most weight
        capped.update_weights(torch.tensor([[0.9, 0.1, 0.7]]))
    assert int(capped.mixture.argmax()) == 1


def test_fast_rl_bandit_mirror_descent_picks_fair_arm() -> None:
    p_fast, w = _p_fair(1.0)
    p_fixed, w_fixed = _p_fair(0.0)  # λ = 0: fixed uniform weights
    p_plus, w_plus = _p_fair(-1.0)  # pseudo-code sign
    assert p_fast == pytest.approx(0.995, abs=0.003) and w[1] > 0.999
    assert p_fixed == pytest.approx(0.05, abs=0.01) and np.allclose(w_fixed, 0.5)
    assert p_plus == pytest.approx(0.004, abs=0.002) and w_plus[0] > 0.999
