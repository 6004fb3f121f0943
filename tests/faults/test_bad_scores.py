"""Pure pieces of the bad-reward path (no Ray): which samples a reward cannot score, how they leave the
update, and the guards that refuse a non-finite update."""

from __future__ import annotations

import math

import pytest
import torch

from services.ppo.group import group_baselined, indexed_group_baselined
from services.ppo.guards import (
    UnsafeUpdate,
    non_finite_entries,
    require_finite_parameters,
    require_finite_state,
    require_finite_step,
)
from services.ppo.iteration import Rollout, drop_unscored
from services.rewards.base import RewardError, RewardFunction, ScoringBatch, score_samples


class Picky(RewardFunction):
    """Scores len(response); NaN for responses containing 'nan', raises on responses containing 'boom'."""

    kind = "picky"

    def _score(self, batch):
        out = []
        for r in batch.responses:
            if "boom" in r:
                raise RuntimeError("cannot score this")
            out.append(math.nan if "nan" in r else float(len(r)))
        return out


def batch(*responses: str) -> ScoringBatch:
    n = len(responses)
    return ScoringBatch([[f"prompt number {i} that is rather long indeed, longer than forty"] for i in range(n)],
                        list(responses), [None] * n, [None] * n)


def test_fail_names_reward_iteration_sample_and_prompt_and_the_fix():
    with pytest.raises(RewardError) as err:
        score_samples(Picky(), "tone", batch("ok", "a nan", "fine"), "fail", iteration=7)
    msg = str(err.value)
    assert "reward 'tone' at iteration 7, sample 2 of 3" in msg and "prompt 'prompt number 1 that is rather long inde…'" in msg
    assert "non-finite score (nan)" in msg and "rewards.on_error=skip" in msg


def test_skip_gives_nan_only_for_the_bad_samples_including_ones_that_raise():
    assert score_samples(Picky(), "tone", batch("ok", "a nan", "abc"), "skip") == [2.0, pytest.approx(math.nan, nan_ok=True), 3.0]
    got = score_samples(Picky(), "tone", batch("ok", "boom", "abc"), "skip")  # the batch raises: found one by one
    assert got[0] == 2.0 and math.isnan(got[1]) and got[2] == 3.0
    with pytest.raises(RewardError, match="sample 2 of 3.*raised RuntimeError: cannot score this"):
        score_samples(Picky(), "tone", batch("ok", "boom", "abc"), "fail", iteration=0)


def rollout(scores: list[list[float]], group_size: int = 1) -> Rollout:
    n = len(scores)
    return Rollout([[1, 2]] * n, [[3 + i] * (1 + i % 3) for i in range(n)], torch.tensor(scores), [None] * n, 10, 1.0, 1.0,
                   group_size=group_size)


def test_drop_unscored_removes_rows_and_keeps_group_membership():
    nan = math.nan
    got, counts = drop_unscored(rollout([[1, 0], [nan, 0], [2, 0], [3, nan]], group_size=2), ["a", "b"])
    assert got.scores.tolist() == [[1.0, 0.0], [2.0, 0.0]]
    assert got.groups.tolist() == [0, 1] and got.response_ids == [[3], [5, 5, 5]]
    assert counts == {"rewards/skipped": 2.0, "rewards/skipped/a": 1.0, "rewards/skipped/b": 1.0}
    same, counts = drop_unscored(rollout([[1, 0], [2, 0]]), ["a", "b"])
    assert same.groups is None and counts["rewards/skipped"] == 0.0
    with pytest.raises(ValueError, match="every sample of the iteration was skipped .reward 'a'"):
        drop_unscored(rollout([[nan, 0], [nan, 1]]), ["a", "b"])


@pytest.mark.parametrize("estimator", ["grpo", "rloo"])
def test_indexed_groups_match_contiguous_groups_and_baseline_over_the_rows_left(estimator):
    returns = torch.tensor([[1.0], [3.0], [0.0], [4.0], [2.0], [2.5]])
    full = group_baselined(returns, 3, estimator, 0.01)
    indexed = indexed_group_baselined(returns, torch.tensor([0, 0, 0, 1, 1, 1]), estimator, 0.01)
    assert torch.allclose(full, indexed)
    # Row 1 of group 0 dropped: the baseline of group 0 is the mean of rows 0 and 2 only.
    partial = indexed_group_baselined(returns[[0, 2, 3, 4, 5]], torch.tensor([0, 0, 1, 1, 1]), estimator, 0.01)
    expected_first = group_baselined(returns[[0, 2]], 2, estimator, 0.01)
    assert torch.allclose(partial[:2], expected_first)
    alone = indexed_group_baselined(torch.tensor([[5.0], [1.0], [2.0]]), torch.tensor([0, 1, 1]), estimator, 0.01)
    assert alone[0, 0] == 0.0 and torch.isfinite(alone).all()  # a group of one has no baseline: no signal, no NaN


def test_guards_refuse_non_finite_updates_and_name_what():
    require_finite_step(torch.tensor(1.0), torch.tensor(0.5), 0, 0)
    with pytest.raises(UnsafeUpdate, match="gradient norm is nan .epoch 2, minibatch 3"):
        require_finite_step(torch.tensor(1.0), torch.tensor(math.nan), 1, 2)
    require_finite_state({"kl": {"beta": 0.1}, "lambdas": torch.ones(2)}, "objective state")
    with pytest.raises(UnsafeUpdate, match=r"objective state would become non-finite \(lambdas, kl.beta\)"):
        require_finite_state({"lambdas": torch.tensor([1.0, math.inf]), "kl": {"beta": math.nan}}, "objective state")
    with pytest.raises(UnsafeUpdate, match="1 trained parameter"):
        require_finite_parameters([torch.ones(2), torch.tensor([math.nan])])


def test_state_already_unset_before_the_update_is_not_a_fault():
    # NaN marks "no threshold" and "not measured yet" (l3m's score EMA before its first constraint step).
    before = {"thresholds": torch.tensor([0.2, math.nan]), "score_ema": torch.full((2,), math.nan)}
    unset = non_finite_entries(before)
    assert unset == ["thresholds", "score_ema"]
    require_finite_state(before, "objective state", already_unset=unset)
    with pytest.raises(UnsafeUpdate, match=r"\(lambdas\)"):
        require_finite_state({**before, "lambdas": torch.tensor([math.nan])}, "objective state", already_unset=unset)
