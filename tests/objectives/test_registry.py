"""Every registered objective builds from its typed config, round-trips its state and names its metrics."""

from __future__ import annotations

import io
from typing import Any

import pytest
import torch

from services.objectives.registry import OBJECTIVES, objective_class

from .bandit import make_objective

MINE = ["ppo", "ppo_sat", "fast_rl", "mu_ppo", "xi_ppo", "nm_ppo", "all_ppo", "reward_dropout", "l3m", "ppo_lagrangian"]
# Options a RootConfig would fill in through `complete` (the run's length).
OPTIONS: dict[str, dict[str, Any]] = {"l3m": {"total_steps": 10}, "nm_ppo": {"iterations_per_threshold": 5}}
PER_BATCH = ("mean_kl", "estimate/", "dropout/", "batch_mean/")


def rewards_for(name: str) -> dict[str, dict]:
    d = objective_class(name).config_cls.constraint_direction or "ge"  # each objective's own direction
    return {"meteor": {"weight": 0.5, "threshold": 0.23, "direction": d}, "topic": {"weight": 1.0, "threshold": 0.48, "direction": d}}


def plain(value: Any) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and plain(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(plain(v) for v in value)
    return value is None or isinstance(value, (bool, int, float, str, torch.Tensor))


@pytest.mark.parametrize("name", MINE)
def test_registered_with_typed_config(name: str) -> None:
    assert name in OBJECTIVES
    cls = objective_class(name)
    config = cls.config_cls()
    assert config.name == name
    for field_name, field in type(config).model_fields.items():
        assert field.description, f"{name}.{field_name} has no description"


@pytest.mark.parametrize("name", MINE)
def test_state_survives_torch_save_and_metrics_are_floats(name: str) -> None:
    options = OPTIONS.get(name, {})
    obj = make_objective(name, rewards_for(name), **options)
    batch = RolloutTensors_example()
    if obj.update_kind == "ppo":
        streams = obj.build_streams(batch)
        assert streams.rewards.shape[:2] == (3, 2) and streams.rewards.shape[2] == len(obj.stream_names)
        assert len(obj.value_coefficients()) == len(obj.stream_names)
        s = len(obj.stream_names)
        obj.mix_advantages(torch.randn(4, s), torch.ones(4))
        obj.after_minibatch(torch.rand(4, s))
    else:
        obj.next_step_kind()
        obj.constraint_loss(torch.zeros(3), batch.scores)
    state = obj.state_dict()
    assert plain(state)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    clone = make_objective(name, rewards_for(name), **options)
    clone.load_state_dict(torch.load(buffer, weights_only=False))
    metrics = obj.metrics()
    assert metrics and all(isinstance(v, float) for v in metrics.values())
    # Statistics of the last rollout/minibatches are not state; everything else must survive the round trip.
    restored = clone.metrics()
    for key, value in metrics.items():
        if not key.startswith(PER_BATCH):
            assert restored[key] == pytest.approx(value, nan_ok=True), key


def RolloutTensors_example():
    from services.objectives.base import RolloutTensors

    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    return RolloutTensors(
        scores=torch.tensor([[0.2, 1.0], [0.3, 0.0], [0.25, 1.0]]),
        kl=torch.tensor([[0.1, 0.2], [0.3, 0.0], [-0.1, 0.4]]) * mask,
        ref_logprobs=torch.tensor([[-1.0, -2.0], [-0.5, 0.0], [-3.0, -0.1]]) * mask,
        mask=mask,
    )


def test_multiplier_metrics_are_named_by_reward() -> None:
    for name in ["mu_ppo", "xi_ppo", "nm_ppo", "all_ppo", "ppo_lagrangian", "l3m"]:
        keys = make_objective(name, rewards_for(name), **OPTIONS.get(name, {})).metrics()
        assert {"multiplier/meteor", "multiplier/topic"} <= keys.keys(), name
    assert {"weight/meteor", "weight/topic", "kl_coef"} <= make_objective("fast_rl", rewards_for("fast_rl")).metrics().keys()
