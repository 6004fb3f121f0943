"""Decoupled-PPO importance weights for overlapped rollouts (services/ppo/off_policy.py) and their use in
the policy loss and the learner's update."""

import math

import pytest
import torch

from services.ppo.losses import clipped_policy_loss
from services.ppo.off_policy import BehaviourLogprobs, pad_logprobs, truncated_importance_weights

MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])


def test_weight_is_one_when_behaviour_is_the_proximal_policy():
    logprobs = torch.log(torch.tensor([[0.2, 0.5, 0.9], [0.3, 0.1, 1.0]]))
    weights, stats = truncated_importance_weights(logprobs, logprobs.clone(), MASK, cap=2.0)
    torch.testing.assert_close(weights, MASK)
    assert stats["async/is_weight_mean"] == pytest.approx(1.0)
    assert stats["async/is_truncated_fraction"] == 0.0


def test_weight_is_the_probability_ratio_truncated_at_the_cap():
    proximal = torch.log(torch.tensor([[0.4, 0.9, 0.1], [0.5, 0.5, 0.5]]))
    behaviour = torch.log(torch.tensor([[0.2, 0.1, 0.2], [0.5, 0.25, 0.9]]))
    weights, stats = truncated_importance_weights(proximal, behaviour, MASK, cap=2.5)
    # ratios 2, 9 (→ 2.5), 0.5 | 1, 2, (padding → 0)
    torch.testing.assert_close(weights, torch.tensor([[2.0, 2.5, 0.5], [1.0, 2.0, 0.0]]))
    assert stats["async/is_weight_mean"] == pytest.approx((2 + 2.5 + 0.5 + 1 + 2) / 5)
    assert stats["async/is_truncated_fraction"] == pytest.approx(1 / 5)
    assert stats["async/is_ratio_max"] == pytest.approx(9.0, rel=1e-5)


def test_on_policy_sequences_are_not_reweighted():
    proximal = torch.zeros(2, 3)
    behaviour = torch.full((2, 3), -1.0)  # ratio e for every token
    weights, _ = truncated_importance_weights(proximal, behaviour, MASK, cap=10.0, stale=torch.tensor([False, True]))
    torch.testing.assert_close(weights[0], torch.ones(3))
    torch.testing.assert_close(weights[1], torch.tensor([math.e, math.e, 0.0]))


def test_a_non_positive_cap_is_an_error():
    with pytest.raises(ValueError, match="cap"):
        truncated_importance_weights(torch.zeros(1, 1), torch.zeros(1, 1), torch.ones(1, 1), cap=0.0)


def test_importance_weight_scales_each_tokens_gradient_without_changing_its_direction():
    """At θ = π_prox (ratio 1, inside the clip) d loss / d logπ_t = −w_t·A_t / M."""
    advantages = torch.tensor([1.0, -2.0, 0.5, 3.0])
    old = torch.log(torch.tensor([0.3, 0.6, 0.2, 0.5]))
    w = torch.tensor([0.5, 2.0, 1.0, 0.0])
    grads = []
    for importance in (None, w):
        logprobs = old.clone().requires_grad_(True)
        loss, _ = clipped_policy_loss(logprobs, old, advantages, 0.2, importance_weight=importance)
        loss.backward()
        grads.append(logprobs.grad)
    plain, weighted = grads
    torch.testing.assert_close(plain, -advantages / 4)
    torch.testing.assert_close(weighted, -w * advantages / 4)
    # The importance weight is not in the normaliser and carries no gradient of its own.
    assert torch.all(torch.sign(weighted[w > 0]) == torch.sign(plain[w > 0]))


def test_pad_logprobs_right_pads_ragged_rows():
    torch.testing.assert_close(pad_logprobs([[-1.0, -2.0], [-3.0]], 3), torch.tensor([[-1.0, -2.0, 0.0], [-3.0, 0.0, 0.0]]))


# --- in the learner ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny():
    from services.config.schema import ModelConfig
    from services.models.loading import load_tokenizer

    model = ModelConfig(name_or_path="tiny-llama")
    return model, load_tokenizer(model.name_or_path)


def _rollout(learner, tokenizer):
    from services.config.schema import SamplingConfig
    from services.rollout.hf import HFBackend
    from services.rollout.prompts import encode_prompts

    contexts = [("Hello", "How are you?"), ("What is AI?",), ("Do you like music?",), ("Bye",)]
    prompts = encode_prompts(tokenizer, contexts, True, 64)
    return HFBackend(learner.policy, tokenizer).generate(prompts, SamplingConfig(max_new_tokens=5, min_new_tokens=5), 0)


def _learner(tiny, **trainer):
    from services.config.schema import TrainerConfig
    from services.ppo.learner import PPOLearner

    model, tokenizer = tiny
    trainer = {"mixed_precision": "fp32", **trainer}  # float32: these checks compare against HF generation exactly
    return PPOLearner(model, TrainerConfig(**trainer), num_streams=1, pad_id=tokenizer.pad_token_id)


def _objective():
    from services.rewards.config import RewardConfig
    from services.objectives.composite import FixedWeightPPO, PPOConfig

    return FixedWeightPPO(PPOConfig(), {"r": RewardConfig(kind="length")})


def test_learner_reports_unit_weights_for_a_stale_label_on_identical_policies(tiny):
    """Behaviour = the learner's own policy (the rollout's log-probs): the weights are 1 up to numerics,
    so the loss equals the uncorrected one. (Parameters are not compared: Adam's first step divides by
    |g|, so a 1e-7 gradient difference on a near-zero gradient moves a weight by ~lr.)"""
    settings = dict(learning_rate=1e-3, epochs=1, minibatch_size=32, seed=3)
    a, b = _learner(tiny, **settings), _learner(tiny, **settings)
    gen = _rollout(a, tiny[1])
    scores = torch.tensor([[1.0], [0.0], [1.0], [0.0]])
    behaviour = BehaviourLogprobs(pad_logprobs(gen.logprobs, 5), torch.ones(4, dtype=torch.long))
    stats = a.train(gen.prompt_ids, gen.response_ids, scores, _objective(), behaviour)
    plain = b.train(gen.prompt_ids, gen.response_ids, scores, _objective())
    assert stats["async/is_weight_mean"] == pytest.approx(1.0, abs=1e-4)
    assert stats["async/is_truncated_fraction"] == 0.0
    assert stats["policy_loss"] == pytest.approx(plain["policy_loss"], rel=1e-4, abs=1e-7)
    assert "async/is_weight_mean" not in plain


def test_learner_truncates_when_the_behaviour_policy_was_far_more_confident(tiny):
    learner = _learner(tiny, epochs=1, minibatch_size=32, async_is_cap=1.5)
    gen = _rollout(learner, tiny[1])
    far = pad_logprobs(gen.logprobs, 5) - 3.0  # π_b = π·e⁻³: ratio e³ > cap for every token
    stats = learner.train(gen.prompt_ids, gen.response_ids, torch.ones(4, 1), _objective(),
                          BehaviourLogprobs(far, torch.ones(4, dtype=torch.long)))
    assert stats["async/is_truncated_fraction"] == 1.0
    assert stats["async/is_weight_mean"] == pytest.approx(1.5)
