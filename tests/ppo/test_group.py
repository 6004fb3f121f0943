"""Critic-free group advantages on hand-computed groups: each reward stream gets its own group baseline."""

from __future__ import annotations

import math

import pytest
import torch

from services.ppo.group import group_advantages, group_baselined, sequence_returns


def test_grpo_normalises_each_stream_within_each_group():
    # two prompts × K = 2 completions, two streams
    returns = torch.tensor([[1.0, 0.0], [3.0, 0.0], [2.0, 5.0], [2.0, 1.0]])
    got = group_baselined(returns, 2, "grpo", std_floor=0.01)
    # group 0, stream 0: mean 2, std (Bessel) √2 → ∓1/√2; stream 0 of group 1 and stream 1 of group 0 are
    # constant: 0; group 1, stream 1: mean 3, std 2√2 → ±1/√2
    s = 1 / math.sqrt(2)
    assert torch.allclose(got, torch.tensor([[-s, 0.0], [s, 0.0], [0.0, s], [0.0, -s]]))


def test_grpo_floors_the_group_std():
    returns = torch.tensor([[0.500], [0.502]])  # std ≈ 0.0014, below the floor 0.01
    got = group_baselined(returns, 2, "grpo", std_floor=0.01)
    assert torch.allclose(got, torch.tensor([[-0.1], [0.1]]), atol=1e-5)  # ∓0.001 / 0.01


def test_rloo_subtracts_the_mean_of_the_other_completions():
    returns = torch.tensor([[1.0], [2.0], [6.0]])  # K = 3
    got = group_baselined(returns, 3, "rloo", std_floor=0.01)
    assert torch.allclose(got, torch.tensor([[1.0 - 4.0], [2.0 - 3.5], [6.0 - 1.5]]))


def test_every_response_token_gets_its_sequence_advantage():
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    rewards = torch.zeros(2, 3, 1)
    rewards[0, 1, 0] = 1.0  # terminal score 1 on a 2-token response
    rewards[1, :, 0] = torch.tensor([-0.1, -0.1, 2.0])  # per-token KL penalty, then the score
    assert torch.allclose(sequence_returns(rewards, mask), torch.tensor([[1.0], [1.8]]))
    got = group_advantages(rewards, mask, 2, "rloo", 0.01)
    assert torch.allclose(got[..., 0], torch.tensor([[-0.8, -0.8, 0.0], [0.8, 0.8, 0.8]]))


def test_rows_that_do_not_form_whole_groups_are_refused():
    with pytest.raises(ValueError, match="groups of"):
        group_baselined(torch.zeros(3, 1), 2, "grpo", 0.01)
    with pytest.raises(ValueError, match="≥ 2"):
        group_baselined(torch.zeros(2, 1), 1, "rloo", 0.01)
