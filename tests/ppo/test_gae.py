"""docs/ALGORITHMS.md §0 shared GAE sanity test, against services/ppo/gae.py."""

import torch

from services.ppo.gae import gae, reward_to_go

RHO = [-0.06, -0.02, 1.06]
VALUES = [0.5, 0.6, 0.7]


def test_gae_returns_and_reward_to_go_match_spec() -> None:
    rewards, values, mask = torch.tensor([RHO]), torch.tensor([VALUES]), torch.ones(1, 3)
    adv, ret = gae(rewards, values, mask, gamma=0.99, lam=0.95)
    torch.testing.assert_close(adv[0], torch.tensor([0.421091, 0.411580, 0.360000]), atol=1e-5, rtol=0)
    torch.testing.assert_close(ret[0], torch.tensor([0.921091, 1.011580, 1.060000]), atol=1e-5, rtol=0)
    torch.testing.assert_close(reward_to_go(rewards, mask)[0], torch.tensor([0.98, 1.04, 1.06]), atol=1e-6, rtol=0)


def test_gae_truncates_at_episode_end_and_handles_streams() -> None:
    # Same episode padded to T = 5 beside a one-token episode; two identical streams.
    rewards = torch.tensor([RHO + [9.0, 9.0], [0.5, 7.0, 7.0, 7.0, 7.0]]).unsqueeze(-1).repeat(1, 1, 2)
    values = torch.tensor([VALUES + [3.0, 3.0], [0.2, 5.0, 5.0, 5.0, 5.0]]).unsqueeze(-1).repeat(1, 1, 2)
    mask = torch.tensor([[1.0, 1, 1, 0, 0], [1, 0, 0, 0, 0]])
    adv, ret = gae(rewards, values, mask, gamma=0.99, lam=0.95)
    torch.testing.assert_close(adv[0, :3, 1], torch.tensor([0.421091, 0.411580, 0.360000]), atol=1e-5, rtol=0)
    assert torch.all(adv[0, 3:] == 0) and torch.all(ret[1, 1:] == 0)
    torch.testing.assert_close(adv[1, 0], torch.tensor([0.3, 0.3]))  # terminal: δ = r − V
    torch.testing.assert_close(reward_to_go(rewards, mask)[0, :, 0], torch.tensor([0.98, 1.04, 1.06, 0.0, 0.0]))
