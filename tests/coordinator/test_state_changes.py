"""CoordinatorState without Ray or HTTP: queued changes, the iteration boundary, validation, controls, persistence.

Behaviour is checked through the objective a learner would build from the handed-out state
(`services.objectives.spec.objective_for`, as the learner does): e.g. the direction in which a Lagrange multiplier moves for a given reward.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch

from services.coordinator import changes, protocol, views
from services.coordinator.errors import ChangeError, ConflictError, NotFoundError
from services.coordinator.state import CoordinatorState
from services.coordinator.store import load_state
from services.objectives.registry import OBJECTIVES
from services.objectives.spec import Handout, objective_for
from services.config.overrides import build_config

from control.live import smoke_config


def learner_lambda_step(state: CoordinatorState, handed: Handout, means: list[float]) -> torch.Tensor:
    """What the learner does with a handed-out state: rebuild/load, one multiplier step at these reward means.
    Returns Δλ (raw multipliers) per reward."""
    objective = objective_for(handed, state.config.rewards, None, None)
    before = objective.multipliers.raw.clone()
    n = len(objective.reward_names)
    rtg = torch.zeros(4, len(objective.stream_names))
    rtg[:, :n] = torch.tensor(means)
    objective.after_minibatch(rtg)
    return objective.multipliers.raw - before


def commit_from(state: CoordinatorState, k: int, handed: Handout, record: dict[str, Any] | None = None) -> None:
    objective = objective_for(handed, state.config.rewards, None, None)
    protocol.commit(state, k, {"objective_state": objective.state_dict(), "record": record or {"iteration": k}})


def snapshot(state: CoordinatorState) -> str:
    """Everything a rejected request must leave untouched (JSON of the persisted state, tensors as lists)."""
    def plain(v: Any) -> Any:
        if isinstance(v, torch.Tensor):
            return v.tolist()
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v

    return json.dumps(plain(state.state_dict()), sort_keys=True, default=str)


def test_threshold_change_applies_from_next_iteration_and_flips_the_multiplier():
    state = CoordinatorState(smoke_config())
    handed = protocol.begin_iteration(state, 0)
    change = changes.set_threshold(state, "meteor", 0.0, who="alice")  # while iteration 0 runs
    assert change.applies_from == 1 and change.old == pytest.approx(0.23) and change.new == 0.0
    # Iteration 0 still uses θ = 0.23: a mean METEOR of 0.1 is below it, so λ_meteor grows.
    assert learner_lambda_step(state, handed, [0.1, 0.9])[0] > 0
    commit_from(state, 0, handed)
    # The learner's (older) threshold did not overwrite the queued change: it applies at the next boundary.
    assert state.thresholds()["meteor"] == pytest.approx(0.23)
    assert views.constraint(state, "meteor")["pending"] == {"threshold": 0.0, "applies_from": 1}
    handed = protocol.begin_iteration(state, 1)
    assert state.thresholds()["meteor"] == 0.0 and views.constraint(state, "meteor")["pending"] is None
    # From iteration 1 the same reward is above θ = 0: λ_meteor shrinks.
    assert learner_lambda_step(state, handed, [0.1, 0.9])[0] < 0


def test_direction_change_rebuilds_the_objective_and_reverses_the_constraint():
    state = CoordinatorState(smoke_config())
    changes.set_direction(state, "meteor", "le")
    handed = protocol.begin_iteration(state, 0)
    assert handed.spec.directions == ("le", "ge")
    assert views.constraint(state, "meteor")["direction"] == "le"
    # meteor ≤ 0.23 with a mean of 0.5 is violated: λ grows (it would shrink for ≥).
    assert learner_lambda_step(state, handed, [0.5, 0.9])[0] > 0


def test_objective_patch_changes_the_learners_step_size_from_the_next_iteration():
    state = CoordinatorState(smoke_config("objective.multiplier_momentum=0.0", "objective.multiplier_max_grad_norm=100"))
    baseline = learner_lambda_step(state, protocol.begin_iteration(state, 0), [0.1, 0.9])
    done = changes.patch_objective(state, {"multiplier_lr": 0.4}, who="bob")
    assert [(c.target, c.old, c.new, c.applies_from) for c in done] == [("objective.multiplier_lr", 0.1, 0.4, 1)]
    assert views.objective(state)["pending"] == {"multiplier_lr": 0.4}
    protocol.commit(state, 0, {"objective_state": state.objective.state_dict(), "record": {}})
    handed = protocol.begin_iteration(state, 1)
    assert views.objective(state)["hyperparameters"]["multiplier_lr"] == 0.4
    assert learner_lambda_step(state, handed, [0.1, 0.9]) == pytest.approx(4 * baseline, rel=1e-4)


def test_kl_coef_patch_sets_the_current_beta_and_keeps_learned_state():
    state = CoordinatorState(smoke_config())
    protocol.begin_iteration(state, 0)
    learned = state.objective.state_dict()
    learned["multipliers"]["raw"] = torch.tensor([1.5, -0.5])
    protocol.commit(state, 0, {"objective_state": learned, "record": {}})
    changes.patch_objective(state, {"kl_coef": 0.05, "target_kl": 0.3})
    handed = protocol.begin_iteration(state, 1)
    assert handed.state["kl"] == {"beta": 0.05, "target": 0.3}
    assert handed.state["multipliers"]["raw"].tolist() == [1.5, -0.5]  # the rebuild kept λ


@pytest.mark.parametrize(
    ("call", "error", "words"),
    [
        (lambda s: changes.set_threshold(s, "metor", 0.2), NotFoundError, ["unknown reward 'metor'", "did you mean 'meteor'"]),
        (lambda s: changes.set_threshold(s, "meteor", float("nan")), ChangeError, ["finite"]),
        (lambda s: changes.set_threshold(s, "meteor", float("inf")), ChangeError, ["finite"]),
        (lambda s: changes.set_threshold(s, "meteor", 1.5), ChangeError, ["out of range", "[0, 1]"]),
        (lambda s: changes.set_threshold(s, "topic", -0.1), ChangeError, ["out of range"]),
        (lambda s: changes.set_threshold(s, "meteor", "0.2"), ChangeError, ["must be a number", "str"]),
        (lambda s: changes.set_threshold(s, "meteor", True), ChangeError, ["must be a number", "bool"]),
        (lambda s: changes.set_direction(s, "meteor", "eq"), ChangeError, ["mu_ppo supports constraint direction ge/le"]),
        (lambda s: changes.set_direction(s, "meteor", "gt"), ChangeError, ["must be one of ge, le, eq"]),
        (lambda s: changes.update_constraint(s, "meteor"), ChangeError, ["give a threshold, a direction"]),
        (lambda s: changes.patch_objective(s, {}), ChangeError, ["at least one"]),
        (lambda s: changes.patch_objective(s, {"lagrange_lr": 0.05}), ChangeError, ["unknown mu_ppo hyperparameter 'lagrange_lr'"]),
        (lambda s: changes.patch_objective(s, {"multiplier_lr": -1.0}), ChangeError, ["multiplier_lr", "greater than 0"]),
        (lambda s: changes.patch_objective(s, {"multiplier_momentum": 1.0}), ChangeError, ["multiplier_momentum", "less than 1"]),
        (lambda s: changes.patch_objective(s, {"multiplier_lr": "0.05"}), ChangeError, ["multiplier_lr", "valid number"]),
        (lambda s: changes.patch_objective(s, {"multiplier_lr": True}), ChangeError, ["multiplier_lr"]),
        (lambda s: changes.patch_objective(s, {"fixed_multipliers": "yes"}), ChangeError, ["fixed_multipliers", "boolean"]),
        (lambda s: changes.patch_objective(s, {"kl_coef": float("nan")}), ChangeError, ["kl_coef", "finite"]),
        (lambda s: changes.patch_objective(s, {"multiplier_lr": 0.05, "seed": 1}), ConflictError, ["objective.seed", "cannot change mid-run"]),
        (lambda s: changes.patch_objective(s, {"multiplier_init": 0.3}), ConflictError, ["multiplier_init", "initial value"]),
        (lambda s: changes.patch_objective(s, {"name": "ppo"}), ConflictError, ["objective cannot change mid-run"]),
        (lambda s: changes.request(s, "explode"), NotFoundError, ["unknown action 'explode'"]),
    ],
)
def test_bad_input_is_rejected_with_a_message_and_leaves_the_state_untouched(call, error, words):
    state = CoordinatorState(smoke_config())
    changes.set_threshold(state, "topic", 0.5)  # something queued that must survive
    assert_refused_and_unchanged(state, call, error, words)


def assert_refused_and_unchanged(state, call, error, words) -> None:
    """`call(state)` raises `error` with every one of `words` in its message, and changes nothing."""
    before = snapshot(state)
    with pytest.raises(error) as raised:
        call(state)
    for word in words:
        assert word in str(raised.value)
    assert snapshot(state) == before


def test_pair_update_is_atomic_when_one_half_is_invalid():
    state = CoordinatorState(smoke_config())
    before = snapshot(state)
    with pytest.raises(ChangeError, match="out of range"):
        changes.update_constraint(state, "meteor", threshold=2.0, direction="le")
    assert snapshot(state) == before


@pytest.mark.parametrize(
    ("overrides", "call", "error", "words"),
    [
        (["objective=ppo"], lambda s: changes.set_threshold(s, "meteor", 0.2), ConflictError, ["objective ppo has no thresholds"]),
        (["objective=fast_rl"], lambda s: changes.set_direction(s, "meteor", "le"), ConflictError, ["fast_rl has no thresholds"]),
        (["objective=ppo_sat"], lambda s: changes.set_direction(s, "meteor", "le"), ConflictError, ["no constraint directions"]),
        (["objective=xi_ppo"], lambda s: changes.set_direction(s, "meteor", "ge"), ChangeError, ["xi_ppo supports constraint direction eq"]),
        (["objective=all_ppo"], lambda s: changes.patch_objective(s, {"kl_in_streams": True}), ConflictError, ["reward streams"]),
        (["objective=ppo_lagrangian", "objective.constraints=[topic]"], lambda s: changes.set_threshold(s, "meteor", 0.2),
         ConflictError, ["'meteor' is not a constraint of objective ppo_lagrangian"]),
        (["objective=fast_rl"], lambda s: changes.patch_objective(s, {"bias": {"bleu": 0.1}}), ChangeError, ["unknown reward"]),
        (["objective=fast_rl"], lambda s: changes.patch_objective(s, {"clip_low": 2.0}), ChangeError, ["clip_low (2.0) exceeds clip_high"]),
    ],
)
def test_changes_that_do_not_apply_to_the_objective_are_refused(overrides, call, error, words):
    assert_refused_and_unchanged(CoordinatorState(smoke_config(*overrides)), call, error, words)


def test_controls_protocol_pause_checkpoint_stop():
    state = CoordinatorState(smoke_config())
    assert changes.poll_controls(state) == {"paused": False, "stop": False, "checkpoint": False}
    change, controls = changes.request(state, "pause", who="ops")
    assert change.target == "control.paused" and controls["paused"]
    assert changes.request(state, "pause")[0] is None  # idempotent, not audited twice
    changes.request(state, "checkpoint")
    assert changes.poll_controls(state) == {"paused": True, "stop": False, "checkpoint": True}
    changes.ack_checkpoint(state, "/runs/x/checkpoints/iter_000003")
    assert changes.poll_controls(state)["checkpoint"] is False
    assert state.audit[-1].target == "checkpoint" and state.audit[-1].new.endswith("iter_000003")
    changes.request(state, "stop")
    assert views.status(state)["state"] == "stopping"
    changes.mark_stopped(state)
    assert views.status(state)["state"] == "stopped" and changes.poll_controls(state)["stop"] is False
    with pytest.raises(ConflictError, match="the run has stopped"):
        changes.set_threshold(state, "meteor", 0.1)
    with pytest.raises(ConflictError):
        changes.request(state, "resume")
    protocol.begin_iteration(state, 0)  # a resumed run iterates again and accepts changes
    assert changes.set_threshold(state, "meteor", 0.1).applies_from == 1


def test_restart_keeps_queued_changes_controls_and_audit(tmp_path):
    path = tmp_path / "coordinator.pt"
    state = CoordinatorState(smoke_config(), path)
    handed = protocol.begin_iteration(state, 0)
    commit_from(state, 0, handed)
    changes.set_threshold(state, "meteor", 0.4)
    changes.set_direction(state, "topic", "le")
    changes.patch_objective(state, {"multiplier_lr": 0.3})
    changes.request(state, "pause")
    restarted = CoordinatorState(smoke_config(), path)  # the actor's __init__ after a crash
    protocol.restore(restarted, load_state(path))
    assert changes.poll_controls(restarted)["paused"] is True
    assert [c.target for c in restarted.audit] == [c.target for c in state.audit]
    assert [c.seq for c in restarted.audit] == [0, 1, 2, 3]
    handed = protocol.begin_iteration(restarted, 1)
    assert restarted.thresholds()["meteor"] == pytest.approx(0.4)
    assert restarted.directions() == {"meteor": "ge", "topic": "le"}
    assert handed.spec.config.multiplier_lr == 0.3


def test_resume_from_checkpoint_drops_one_shot_requests_but_keeps_changes(tmp_path):
    state = CoordinatorState(smoke_config(), tmp_path / "coordinator.pt")
    changes.patch_objective(state, {"multiplier_lr": 0.3})
    changes.request(state, "pause")
    changes.request(state, "stop")
    checkpoint = state.state_dict()  # what the driver saves before it ends the run
    resumed = CoordinatorState(smoke_config())
    protocol.restore(resumed, checkpoint)
    changes.new_session(resumed)
    assert changes.poll_controls(resumed) == {"paused": False, "stop": False, "checkpoint": False}
    assert views.objective(resumed)["pending"] == {"multiplier_lr": 0.3}
    assert {c.target for c in resumed.audit if c.who == "resume"} == {"control.paused", "control.stop"}


def test_resume_time_override_wins_over_an_earlier_rest_change(tmp_path):
    state = CoordinatorState(smoke_config(), tmp_path / "coordinator.pt")
    changes.patch_objective(state, {"multiplier_lr": 0.3, "kl_eta": 0.2})
    changes.set_threshold(state, "meteor", 0.4)
    commit_from(state, 0, protocol.begin_iteration(state, 0))
    saved = state.state_dict()
    # Resumed with objective.multiplier_lr=0.05 and rewards.topic.threshold=0.6 on the command line.
    resumed = CoordinatorState(smoke_config("objective.multiplier_lr=0.05", "rewards.topic.threshold=0.6"))
    protocol.restore(resumed, saved)
    view = views.objective(resumed)["hyperparameters"]
    assert view["multiplier_lr"] == 0.05 and view["kl_eta"] == 0.2  # the override wins; the other REST change stays
    assert resumed.thresholds() == {"meteor": pytest.approx(0.4), "topic": pytest.approx(0.6)}
    assert {c.target for c in resumed.audit if c.who == "launch"} == {"objective.multiplier_lr", "rewards.topic.threshold"}


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_views_are_json_safe_for_every_objective(name):
    state = CoordinatorState(build_config(["preset=smoke", f"objective={name}"]))
    protocol.commit(state, 0, {"objective_state": state.objective.state_dict(),
                     "record": {"reward/meteor": float("nan"), "tokens_per_second": float("inf"), "eval/score": 0.5}})
    for view in (views.status(state), views.constraints(state), views.objective(state), views.audit(state)):
        json.dumps(view, allow_nan=False)
    assert views.status(state)["last_eval"] == {"iteration": 0, "metrics": {"eval/score": 0.5}}
    protocol.record_evaluation(state, 1, {"eval/score": 0.7, "eval/metric/bleu": float("nan")})
    assert views.status(state)["last_eval"] == {"iteration": 1, "metrics": {"eval/score": 0.7, "eval/metric/bleu": None}}
    expected = (ConflictError, "first held-out evaluation") if name == "nm_ppo" else (NotFoundError, "only nm_ppo")
    with pytest.raises(expected[0], match=expected[1]):
        views.nelder_mead(state)


def test_constraint_view_reports_multiplier_or_weight():
    mu = CoordinatorState(smoke_config())
    commit_from(mu, 0, protocol.begin_iteration(mu, 0), {"reward/meteor": 0.1, "violation/meteor": 0.13})
    meteor = views.constraint(mu, "meteor")
    assert meteor["multiplier"] == pytest.approx(float(torch.sigmoid(mu.objective.multipliers.raw[0])))
    assert meteor["weight"] is None and meteor["current"] == 0.1 and meteor["violation"] == 0.13
    ppo = CoordinatorState(build_config(["preset=smoke", "objective=ppo", "rewards.meteor.weight=0.25"]))
    view = views.constraint(ppo, "meteor")
    assert view["weight"] == 0.25 and view["threshold"] is None and not view["constrained"]


def test_restart_replays_changes_logged_after_the_last_snapshot(tmp_path):
    """A REST change is one fsynced line in audit.jsonl (the write-ahead log); coordinator.pt is rewritten at
    commits. After a crash, lines after the snapshot are replayed and a torn last line is dropped."""
    path = tmp_path / "coordinator.pt"
    state = CoordinatorState(smoke_config(), path)
    commit_from(state, 0, protocol.begin_iteration(state, 0))  # snapshot with an empty log
    changes.set_threshold(state, "meteor", 0.3)
    changes.patch_objective(state, {"multiplier_lr": 0.2})
    changes.request(state, "pause")
    assert torch.load(path, weights_only=False)["audit_length"] == 0  # the snapshot predates the changes
    with (tmp_path / "audit.jsonl").open("a") as f:
        f.write('{"time": 0, "who": "torn')  # a crash mid-append: never acknowledged
    restarted = CoordinatorState(smoke_config(), path)
    protocol.restore(restarted, load_state(path))
    assert [c.target for c in restarted.audit] == ["rewards.meteor.threshold", "objective.multiplier_lr", "control.paused"]
    assert views.constraint(restarted, "meteor")["pending"]["threshold"] == 0.3
    assert views.objective(restarted)["pending"] == {"multiplier_lr": 0.2}
    assert changes.poll_controls(restarted)["paused"] is True
    changes.set_threshold(restarted, "topic", 0.5)  # the log is rewritten without the torn line, then appended to
    lines = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [e["seq"] for e in lines] == [0, 1, 2, 3]


@pytest.mark.skipif("nm_ppo" not in OBJECTIVES, reason="nm_ppo not registered")
def test_nelder_mead_view_follows_the_search():
    state = CoordinatorState(build_config(["preset=smoke", "objective=nm_ppo", "evaluation.every=1"]))
    with pytest.raises(ConflictError, match="starts at the first held-out evaluation"):
        views.nelder_mead(state)
    handed = protocol.begin_iteration(state, 0)
    learner = objective_for(handed, state.config.rewards, None, None)
    learner.observe_evaluation(0, {"eval/score": 0.3, "eval/reward/meteor": 0.1, "eval/reward/topic": 0.5})
    protocol.commit(state, 0, {"objective_state": learner.state_dict(), "record": {}})
    view = views.nelder_mead(state)
    json.dumps(view, allow_nan=False)
    assert view["phase"] == "init" and len(view["simplex"]) == 3 and view["pending"] == view["target"]
    assert view["best"] is None and view["history"] == []
    with pytest.raises(ConflictError, match="running Nelder–Mead search"):
        changes.patch_objective(state, {"alpha": 2.0})
    assert changes.patch_objective(state, {"iterations_per_threshold": 3})[0].new == 3


def test_store_coalesces_writes_without_losing_a_pending_snapshot(tmp_path):
    """Group commit: a log-only write staged after an unwritten snapshot carries that snapshot with it."""
    from services.coordinator.audit import Change
    from services.coordinator.store import Snapshot, StateStore

    path = tmp_path / "coordinator.pt"
    store = StateStore(path)
    audit = [Change(1.0, "a", "control.paused", False, True, 0, 0)]
    store.submit(Snapshot(1, {"marker": "core-1"}, 1, audit, 1, 0))
    audit.append(Change(2.0, "b", "control.paused", True, False, 0, 1))
    store.submit(Snapshot(2, None, 0, audit, 2, 0))
    store.flush(1)  # satisfied by the single write of version 2
    saved = load_state(path)
    assert saved["marker"] == "core-1" and saved["audit_length"] == 1
    assert [e["who"] for e in saved["audit"]] == ["a", "b"]  # entry b is replayed on load
    store.flush(2)  # already durable: no second write
    assert (tmp_path / "audit.jsonl").read_text().count("\n") == 2
