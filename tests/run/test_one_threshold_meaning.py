"""One meaning of "threshold" per objective: the progress line, metrics.jsonl's record, /metrics, /v1/constraints
and a threshold change agree with `objective.constrained_rewards()` — for every objective.

The record is built by the learner's own code (LearnerLoop._record) from a made-up batch of scores, committed
through the coordinator's protocol as the driver does; no model or Ray is needed for these pieces.
"""

from __future__ import annotations

import re

import pytest
import torch

from services.config.overrides import build_config
from services.coordinator import changes, protocol, views
from services.coordinator.changes import ConflictError
from services.coordinator.state import CoordinatorState
from services.driver import format_line, live_numbers
from services.objectives import spec as objective_spec
from services.objectives.registry import OBJECTIVES
from services.ppo.iteration import LearnerLoop, Rollout


def committed(name: str, tmp_path) -> tuple[CoordinatorState, dict, set[str]]:
    config = build_config(["preset=smoke", f"objective={name}"])
    state = CoordinatorState(config, tmp_path / "coordinator.pt")
    handout = protocol.begin_iteration(state, 0)
    objective = objective_spec.objective_for(handout, config.rewards, None, None)
    loop = LearnerLoop.__new__(LearnerLoop)  # only _record: no policy needed
    loop.config, loop.spec_version = config, handout.spec.version
    rollout = Rollout(prompt_ids=[[1], [1]], response_ids=[[2], [3]], scores=torch.tensor([[0.2, 0.5], [0.3, 0.4]]),
                      references=["a", "b"], tokens=2, rollout_seconds=1.0, reward_seconds=1.0)
    record = loop._record(0, rollout, objective, {"train_seconds": 1.0})
    protocol.commit(state, 0, {"objective_state": objective.state_dict(), "record": record, "spec_version": handout.spec.version})
    return state, record, set(objective.constrained_rewards())


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_every_view_of_thresholds_agrees_with_the_objective(name, tmp_path):
    state, record, constrained = committed(name, tmp_path)
    recorded = {k.split("/", 1)[1] for k in record if k.startswith("threshold/")}
    assert recorded <= constrained  # nm_ppo's are NaN (not recorded) until its search proposes some
    assert {k.split("/", 1)[1] for k in record if k.startswith("violation/")} == recorded
    line = format_line(record)
    assert set(re.findall(r"(\w+)=[\d.]+\(θ=", line)) == recorded, line
    assert set(re.findall(r"(\w+) [\d.-]+/[\d.-]+", live_numbers(record))) == recorded
    if name != "nm_ppo":
        assert recorded == constrained  # a constraint with a configured θ records it from the first iteration
    shown = {c["name"]: c for c in views.constraints(state)}
    assert {n for n, c in shown.items() if c["threshold"] is not None} == recorded
    assert {n for n, c in shown.items() if c["constrained"]} == constrained
    exposition = state.telemetry.render().decode()
    assert set(re.findall(r'crlhf_constraint_threshold\{[^}]*reward="(\w+)"', exposition)) == recorded
    if constrained:
        changes.set_threshold(state, sorted(constrained)[0], 0.3)
    else:
        with pytest.raises(ConflictError, match="has no thresholds"):
            changes.set_threshold(state, "meteor", 0.3)


def test_fast_rl_normalises_rewards_and_has_no_thresholds(tmp_path):
    """docs/ALGORITHMS.md §8: fast_rl weights rewards by mirror descent; no threshold enters its update."""
    state, record, constrained = committed("fast_rl", tmp_path)
    assert constrained == set() and "θ" not in format_line(record) and "/" not in live_numbers(record)
    assert {"weight/meteor", "weight/topic"} <= set(record)
