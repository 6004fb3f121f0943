"""`reward_dropout` (§9): bi-objective reward, dropout rules, PPO masking, importance weights, bandit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from services.objectives.base import RolloutTensors
from services.objectives.dropout import truncated_importance_weight

from .bandit import SoftmaxPolicy, make_objective, run

RHAT = [-3.0, -1.0, 0.5, 2.0, 4.0]


def given_rhat(values: list[float]) -> RolloutTensors:
    """One-token rollout whose r̂ equals `values` when likelihood_weight = 0 (R = score)."""
    b = len(values)
    return RolloutTensors(torch.tensor(values).view(b, 1), torch.zeros(b, 1), torch.zeros(b, 1), torch.ones(b, 1))


def literal(**options: object):
    """Algorithm 1, text-literal: dropped r̂ → 0, no KL term, raw advantages."""
    return make_objective(
        "reward_dropout", {"r": {}}, reward_form="algorithm1", mode="zero_reward", likelihood_weight=0.0,
        normalize_advantage=False, center_advantage=False, **options,
    )


def test_bi_objective_reward_sum_and_length_normalised() -> None:
    batch = RolloutTensors(torch.tensor([[0.6]]), torch.zeros(1, 4), torch.tensor([[-1.2, -0.4, -2.0, -9.0]]), torch.tensor([[1.0, 1, 1, 0]]))
    _, rhat = make_objective("reward_dropout", {"r": {}}).bi_objective(batch)
    assert float(rhat[0]) == pytest.approx(-3.0, abs=1e-6)
    _, rhat = make_objective("reward_dropout", {"r": {}}, length_normalize=True).bi_objective(batch)
    assert float(rhat[0]) == pytest.approx(0.6 - 1.2, abs=1e-6)


def test_quantile_and_threshold_rules_match_spec() -> None:
    obj = literal(rule="quantile", quantile=0.6)
    terminal = obj.build_streams(given_rhat(RHAT)).rewards[:, 0, 0]
    torch.testing.assert_close(terminal, torch.tensor([0.0, 0.0, 0.0, 2.0, 4.0]))
    assert obj.metrics()["dropout/cutoff"] == pytest.approx(1.1)
    terminal = literal(rule="threshold", delta=0.0).build_streams(given_rhat(RHAT)).rewards[:, 0, 0]
    torch.testing.assert_close(terminal, torch.tensor([0.0, 0.0, 0.5, 2.0, 4.0]))


def test_quantile_keeps_ties() -> None:
    streams = make_objective("reward_dropout", {"r": {}}, likelihood_weight=0.0).build_streams(given_rhat([0.7] * 6))
    assert torch.all(streams.sequence_weight == 1.0)


def test_random_rule_is_seeded_and_round_trips() -> None:
    a, b = literal(rule="random", seed=3), literal(rule="random", seed=3)
    batch = given_rhat([1.0] * 200)
    first = a.build_streams(batch).rewards[:, 0, 0]
    torch.testing.assert_close(first, b.build_streams(batch).rewards[:, 0, 0])
    assert 0.1 < float((first > 0).float().mean()) < 0.3  # keep probability 1 − γ = 0.2
    c = literal(rule="random", seed=99)
    c.load_state_dict(a.state_dict())
    torch.testing.assert_close(c.build_streams(batch).rewards, a.build_streams(batch).rewards)


def test_mask_mode_weights_sequences_and_excludes_them_from_normalisation() -> None:
    obj = make_objective("reward_dropout", {"r": {}}, likelihood_weight=0.0, rule="quantile", quantile=0.5)
    streams = obj.build_streams(given_rhat([0.1, 0.9, 0.2, 0.8]))
    torch.testing.assert_close(streams.sequence_weight, torch.tensor([0.0, 1.0, 0.0, 1.0]))
    torch.testing.assert_close(streams.rewards[:, 0, 0], torch.tensor([0.1, 0.9, 0.2, 0.8]))  # eq7: R, dropped too (critic)
    adv = torch.tensor([[1.0], [2.0], [100.0], [3.0]])
    mixed = obj.mix_advantages(adv, torch.tensor([1.0, 1.0, 0.0, 1.0]))
    torch.testing.assert_close(mixed, torch.tensor([-1.0, 0.0, 0.0, 1.0]))  # stats of (1, 2, 3) only
    assert obj.metrics()["dropout/kept_fraction"] == 0.5


def test_eq7_stream_and_zero_reward_mode() -> None:
    batch = RolloutTensors(
        scores=torch.tensor([[1.0], [0.0]]), kl=torch.tensor([[0.5, 0.5], [0.25, 0.25]]),
        ref_logprobs=torch.tensor([[-1.0, -1.0], [-1.0, -1.0]]), mask=torch.ones(2, 2),
    )  # r̂ = (−1, −2): threshold δ = 0 drops both
    masked = make_objective("reward_dropout", {"r": {}}, rule="threshold").build_streams(batch)
    torch.testing.assert_close(masked.rewards[..., 0], torch.tensor([[-0.5, 0.5], [-0.25, -0.25]]))
    assert masked.sequence_weight.sum() == 0
    literal_eq7 = make_objective("reward_dropout", {"r": {}}, rule="threshold", mode="zero_reward").build_streams(batch)
    # dropped: r̂_δ = 0, so ℜ = 0 − ln π_θ = −ln β − Σ k: terminal −ln β = +2
    torch.testing.assert_close(literal_eq7.rewards[..., 0], torch.tensor([[-0.5, 1.5], [-0.25, 1.75]]))
    assert torch.all(literal_eq7.sequence_weight == 1.0)
    kept = make_objective("reward_dropout", {"r": {}}, rule="quantile", quantile=0.5, reward_form="algorithm1")
    torch.testing.assert_close(kept.build_streams(batch).rewards[..., 0], torch.tensor([[0.0, -1.0], [0.0, -2.0]]))


def test_importance_weights() -> None:
    torch.testing.assert_close(truncated_importance_weight(torch.tensor([0.3, -0.7])), torch.tensor([1.0, 0.496585]), atol=1e-6, rtol=0)
    assert float(truncated_importance_weight(torch.tensor([800.0]))) == 1.0  # log-space: no overflow
    obj = make_objective(
        "reward_dropout", {"r": {}}, behaviour_sampling=True, sequence_importance_weight=True, rule="threshold", delta=0.0, likelihood_weight=0.0
    )
    assert obj.sample_from_reference and obj.rollout_temperature == 0.4
    batch = RolloutTensors(
        scores=torch.tensor([[1.0], [1.0]]), kl=torch.tensor([[0.1], [0.2]]), ref_logprobs=torch.tensor([[-1.0], [-1.0]]),
        mask=torch.ones(2, 1), behaviour_logprobs=torch.tensor([[-1.2], [-0.1]]),
    )  # log π_θ = (−0.9, −0.8): log-ratios (0.3, −0.7)
    torch.testing.assert_close(obj.build_streams(batch).sequence_weight, torch.tensor([1.0, 0.496585]), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="behaviour_logprobs"):
        obj.build_streams(RolloutTensors(batch.scores, batch.kl, batch.ref_logprobs, batch.mask))
    on_policy = make_objective("reward_dropout", {"r": {}})
    assert not on_policy.sample_from_reference and on_policy.rollout_temperature is None


def _p_best(**options: object) -> float:
    """5 arms with r̂ = (0.2 … 1.0), on-policy REINFORCE without baseline, batch 64, lr 0.5, 200 updates."""
    arms = np.array([[0.2], [0.4], [0.6], [0.8], [1.0]])
    finals = []
    for seed in range(10):
        policy = SoftmaxPolicy(5)
        run(literal(seed=seed, **options), policy, arms, seed=seed, iterations=200, batch=64, lr=0.5)
        finals.append(policy.probs[4])
    return float(np.mean(finals))


def test_bandit_quantile_beats_none_beats_random() -> None:
    quantile = _p_best(rule="quantile", quantile=0.8)
    none = _p_best(rule="threshold", delta=0.0)  # every r̂ > 0: nothing dropped
    random = _p_best(rule="random", quantile=0.8)
    assert quantile > none > random
    assert quantile == pytest.approx(0.991, abs=0.003)
    assert none == pytest.approx(0.970, abs=0.003)
    assert random == pytest.approx(0.699, abs=0.03)  # depends on the dropout RNG stream (spec: numpy's)
