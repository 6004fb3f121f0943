"""Every objective with every advantage estimator: two real learner iterations (the LearnerLoop the actor
runs, tiny model). l3m accepts every estimator and uses none (it takes SFT and barrier steps)."""

from __future__ import annotations

import math

import pytest

from services.config.overrides import ConfigError, build_config
from services.coordinator import protocol
from services.coordinator.state import CoordinatorState
from services.objectives.registry import OBJECTIVES

from ppo.loop import fixed_rollout, make_loop


@pytest.mark.slow
@pytest.mark.parametrize("estimator", ["gae", "grpo", "rloo"])
@pytest.mark.parametrize("objective", list(OBJECTIVES))
def test_objective_and_estimator_train_or_are_refused(objective, estimator):
    overrides = ["preset=smoke", f"objective={objective}", f"trainer.advantage={estimator}", "rollout.samples_per_prompt=2"]
    config = build_config(overrides)
    state, loop = CoordinatorState(config), make_loop(config)
    needs_critic = estimator == "gae" and objective != "l3m"  # l3m never builds one, whatever the estimator
    assert (loop.learner.models.value is None) != needs_critic  # a critic only where GAE needs one
    for k in range(2):
        result = loop.train(k, protocol.begin_iteration(state, k), fixed_rollout(config, k), None)
        protocol.commit(state, k, result)
        losses = [result["record"][key] for key in ("policy_loss", "grad_norm") if key in result["record"]]
        assert all(math.isfinite(v) for v in losses), result["record"]
        assert math.isfinite(result["record"]["kl"])  # every objective records how far it moved (l3m too)


def test_group_estimators_need_several_completions_per_prompt():
    with pytest.raises((ConfigError, ValueError), match="samples_per_prompt to 2 or more"):
        build_config(["preset=smoke", "trainer.advantage=grpo"])
