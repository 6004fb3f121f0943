"""Every hyperparameter `PATCH /v1/objective` accepts changes what the real learner does, from the announced
iteration on; every other one is refused with the reason.

Twin runs on the tiny model without Ray: the real `CoordinatorState` hands out spec + state, the real
`LearnerLoop` (what `LearnerActor` runs) trains on identical fixed rollouts. The patched twin is patched
while iteration 0 runs, so the change applies from iteration 1: iteration 0 must be bit-identical to the
unpatched twin's, iteration 1 must differ (in the record, the learned state or the policy's weights).
"""

from __future__ import annotations

import json
import typing
from typing import Any

import pytest
import torch

from services.config.overrides import build_config
from services.coordinator import changes, protocol
from services.coordinator.errors import ConflictError
from services.coordinator.state import CoordinatorState
from services.objectives.registry import OBJECTIVES, objective_class

from ppo.loop import fixed_rollout, make_loop  # tests/ppo/loop.py

# Launch options that make a field matter within two iterations (e.g. clip bounds only act with smoothing=clip).
CONTEXT: dict[tuple[str, str], list[str]] = {
    ("fast_rl", "clip_low"): ["objective.smoothing=clip"],
    ("fast_rl", "clip_high"): ["objective.smoothing=clip"],
    ("fast_rl", "smoothing_rate"): ["objective.smoothing=ema"],
    ("reward_dropout", "quantile"): ["objective.rule=quantile"],
    ("reward_dropout", "delta"): ["objective.rule=threshold"],
    # β_T at T = 1 is the reference, i.e. the policy before its first update: the ratio π/β then straddles 1
    ("reward_dropout", "iw_clip"): ["objective.behaviour_sampling=true", "objective.behaviour_temperature=1.0",
                                    "objective.sequence_importance_weight=true"],
    ("reward_dropout", "sequence_importance_weight"): ["objective.behaviour_sampling=true", "objective.behaviour_temperature=1.0"],
    ("reward_dropout", "center_advantage"): ["objective.normalize_advantage=false"],
    ("fast_rl", "kl_eta"): ["objective.target_kl=0.05"],  # η moves β only towards a KL target
    ("mu_ppo", "kl_eta"): ["objective.target_kl=0.05"],
    ("xi_ppo", "kl_eta"): ["objective.target_kl=0.05"],
    ("nm_ppo", "kl_eta"): ["objective.target_kl=0.05"],
    ("l3m", "ema"): ["objective.task_probability=0.0"],  # the EMA only enters constraint steps
}
# Patched values where the generic perturbation (see `perturbed`) would not show an effect.
VALUES: dict[tuple[str, str], Any] = {
    ("fast_rl", "bias"): {"meteor": 0.3},
    ("fast_rl", "clip_low"): 0.5,  # between the two rewards' batch means: the clip changes their difference
    ("fast_rl", "clip_high"): 0.5,
    ("fast_rl", "max_weight_ratio"): 1.001,  # the default cap (10) binds only after many updates; this one at once
    ("mu_ppo", "multiplier_max_grad_norm"): 1e-4,  # small enough to clip the multipliers' gradient
    ("all_ppo", "multiplier_max_grad_norm"): 1e-4,
    ("nm_ppo", "multiplier_max_grad_norm"): 1e-4,
    ("xi_ppo", "multiplier_max_grad_norm"): 1e-4,
    ("l3m", "task_probability"): 0.0,
    ("reward_dropout", "iw_clip"): 3.0,
    ("nm_ppo", "reached_tolerance"): 100.0,  # every held-out mean counts as reached: the window closes
    ("ppo_lagrangian", "lambda_max"): 0.5,  # below λ_init = 1: the clamp acts
    ("ppo_lagrangian", "delay"): 100,
    ("ppo_lagrangian", "cost_window"): 3,  # fewer episodes than a rollout: J̄_c changes
    ("ppo_lagrangian", "score_clip"): 0.1,  # scores lie in [0, 1]
    ("ppo_lagrangian", "value_clip"): 1e-3,
    ("nm_ppo", "simplex_low"): {"meteor": 0.0, "topic": 0.0},
    ("nm_ppo", "simplex_high"): {"meteor": 0.9, "topic": 0.9},
}
EVALUATION = {"eval/score": 0.5, "eval/reward/meteor": 0.2, "eval/reward/topic": 0.4}


def launch_config(objective: str, *extra: str):
    return build_config(["preset=smoke", f"objective={objective}", "control.enabled=false", *extra])


def perturbed(objective: str, field: str, value: Any) -> Any:
    """A valid value different from `value` that the field's type allows."""
    if (objective, field) in VALUES:
        return VALUES[(objective, field)]
    annotation = objective_class(objective).config_cls.model_fields[field].annotation
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Literal:
        return next(a for a in args if a != value)
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 3
    if isinstance(value, float):
        return value * 0.5 if value != 0 else 0.3
    if value is None:
        return 4 if int in args else 0.05
    raise AssertionError(f"no perturbation for {objective}.{field}={value!r}: add one to VALUES")


def patchable(objective: str) -> list[str]:
    cls = objective_class(objective).config_cls
    return [f for f in cls.model_fields if f not in cls.frozen_fields()]


def run_twin(objective: str, field: str | None, launch: list[str]) -> list[dict[str, Any]]:
    """Two iterations; with `field`, it is patched while iteration 0 runs. Returns what each iteration produced."""
    config = launch_config(objective, *launch)
    state = CoordinatorState(config)
    loop = make_loop(config)
    out = []
    for k in range(2):
        handout = protocol.begin_iteration(state, k)
        if k == 0 and field is not None:
            current = getattr(state.spec.config, field)
            changes.patch_objective(state, {field: perturbed(objective, field, current)})
        evaluation = EVALUATION if objective == "nm_ppo" else None
        result = loop.train(k, handout, fixed_rollout(config, k), evaluation)
        protocol.commit(state, k, result)
        record = {key: v for key, v in result["record"].items() if not key.startswith(("time/", "memory/")) and key != "objective/version"}
        params = torch.cat([p.detach().flatten() for p in loop.learner.policy.parameters()])
        out.append({"record": record, "state": _plain(result["objective_state"]), "policy": params})
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Bit-identical iterations (NaN equal to NaN: e.g. statistics of an empty selection)."""
    def text(value: Any) -> str:
        return json.dumps(value, sort_keys=True, default=str)

    return text(a["record"]) == text(b["record"]) and text(a["state"]) == text(b["state"]) and torch.equal(a["policy"], b["policy"])


CASES = [(name, field) for name in OBJECTIVES for field in patchable(name)]


@pytest.fixture(scope="module")
def twins() -> dict[tuple[str, tuple[str, ...]], list[dict[str, Any]]]:
    return {}


@pytest.mark.slow
@pytest.mark.parametrize("objective,field", CASES, ids=[f"{o}.{f}" for o, f in CASES])
def test_a_patched_hyperparameter_changes_the_learner_from_the_next_iteration(objective, field, twins):
    launch = CONTEXT.get((objective, field), [])
    key = (objective, tuple(launch))
    if key not in twins:
        twins[key] = run_twin(objective, None, launch)
    unpatched = twins[key]
    patched = run_twin(objective, field, launch)
    assert same(patched[0], unpatched[0]), f"{objective}.{field}: the patch leaked into the iteration it was made during"
    assert not same(patched[1], unpatched[1]), f"{objective}.{field}: accepted, but the learner behaves exactly as before"


@pytest.mark.parametrize("objective", list(OBJECTIVES))
def test_frozen_hyperparameters_are_refused_with_their_reason(objective):
    state = CoordinatorState(launch_config(objective))
    frozen = objective_class(objective).config_cls.frozen_fields()
    for field, reason in frozen.items():
        if field == "name":
            continue
        value = getattr(state.spec.config, field)
        with pytest.raises(ConflictError) as refused:
            changes.patch_objective(state, {field: perturbed(objective, field, value)})
        assert field in str(refused.value) and reason in str(refused.value)
    assert not state.queued.objective and not state.audit
