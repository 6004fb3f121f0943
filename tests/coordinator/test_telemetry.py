"""RunTelemetry against real records (tests/fixtures/metrics_mu_ppo_smoke.jsonl: 3 iterations of a real
`preset=smoke objective=mu_ppo evaluation.every=1` run, as the driver wrote them)."""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from services.coordinator.telemetry import ACTOR_KINDS, PHASES, RunTelemetry

RECORDS = [json.loads(line) for line in (Path(__file__).parents[1] / "fixtures" / "metrics_mu_ppo_smoke.jsonl").read_text().splitlines()]
REWARDS = ["meteor", "topic"]
# What the learner returns to the coordinator's commit; the driver adds these afterwards.
DRIVER_KEYS = ("time/sync", "time/wall", "time/eval")


def samples(t: RunTelemetry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Parsed exposition: (sample name, sorted labels) -> value. Parsing the text is what Prometheus sees."""
    out = {}
    for family in text_string_to_metric_families(t.render().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(t: RunTelemetry, name: str, **labels: str) -> float:
    return samples(t)[(name, tuple(sorted({"run": t.run, **labels}.items())))]


def learner_part(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in DRIVER_KEYS and not k.startswith("eval/")}


@pytest.fixture
def telemetry() -> RunTelemetry:
    return RunTelemetry("mu-smoke", REWARDS, objective="mu_ppo", process_metrics=False)


def test_gauges_show_the_last_iteration(telemetry: RunTelemetry) -> None:
    for record in RECORDS:
        telemetry.observe_record(record)
    last = RECORDS[-1]
    for name in REWARDS:
        assert value(telemetry, "crlhf_reward_value", reward=name) == pytest.approx(last[f"reward/{name}"])
        assert value(telemetry, "crlhf_constraint_threshold", reward=name) == pytest.approx(last[f"threshold/{name}"])
        assert value(telemetry, "crlhf_constraint_violation", reward=name) == pytest.approx(last[f"violation/{name}"])
        assert value(telemetry, "crlhf_constraint_multiplier", reward=name) == pytest.approx(last[f"multiplier/{name}"])
        assert value(telemetry, "crlhf_eval_reward_value", reward=name) == pytest.approx(last[f"eval/reward/{name}"])
    assert value(telemetry, "crlhf_reward_weight", reward="kl") == pytest.approx(last["weight/kl"])
    assert value(telemetry, "crlhf_kl_divergence") == pytest.approx(last["kl"])
    assert value(telemetry, "crlhf_kl_coefficient") == pytest.approx(last["kl_coef"])
    assert value(telemetry, "crlhf_eval_score") == pytest.approx(last["eval/score"])
    assert value(telemetry, "crlhf_rollout_tokens_per_second") == pytest.approx(last["tokens_per_second"])
    assert value(telemetry, "crlhf_iteration") == 2
    assert value(telemetry, "crlhf_run_info", objective="mu_ppo") == 1
    # mu_ppo records no Nelder–Mead search: those series do not exist rather than read 0.
    assert not any(name.startswith("crlhf_nelder_mead") for name, _ in samples(telemetry))


def test_counters_and_histograms_accumulate_every_iteration(telemetry: RunTelemetry) -> None:
    for record in RECORDS:
        telemetry.observe_record(record)
    assert value(telemetry, "crlhf_iterations_total") == 3
    assert value(telemetry, "crlhf_generated_tokens_total") == sum(r["tokens"] for r in RECORDS)
    for key, phase in PHASES.items():
        assert value(telemetry, "crlhf_phase_duration_seconds_count", phase=phase) == 3
        assert value(telemetry, "crlhf_phase_duration_seconds_sum", phase=phase) == pytest.approx(sum(r[f"time/{key}"] for r in RECORDS))
        # Cumulative buckets: +Inf holds every observation, each bucket holds the ones ≤ its bound.
        assert value(telemetry, "crlhf_phase_duration_seconds_bucket", phase=phase, le="+Inf") == 3
        assert value(telemetry, "crlhf_phase_duration_seconds_bucket", phase=phase, le="10.0") == sum(r[f"time/{key}"] <= 10 for r in RECORDS)
    assert value(telemetry, "crlhf_iteration_duration_seconds_sum") == pytest.approx(sum(r["time/wall"] for r in RECORDS))


def test_an_iteration_observed_twice_counts_once(telemetry: RunTelemetry) -> None:
    """The coordinator observes the learner's record at commit, then the driver's completed one."""
    telemetry.observe_record(learner_part(RECORDS[0]))
    assert ("crlhf_eval_score", (("run", "mu-smoke"),)) not in samples(telemetry)  # the driver adds it later
    telemetry.observe_record(RECORDS[0])
    for record in RECORDS[1:]:
        telemetry.observe_record(learner_part(record))
        telemetry.observe_record(record)
    assert value(telemetry, "crlhf_iterations_total") == 3
    assert value(telemetry, "crlhf_generated_tokens_total") == sum(r["tokens"] for r in RECORDS)
    assert value(telemetry, "crlhf_phase_duration_seconds_count", phase="train") == 3
    assert value(telemetry, "crlhf_phase_duration_seconds_count", phase="weight_sync") == 3  # only in the second
    assert value(telemetry, "crlhf_eval_score") == pytest.approx(RECORDS[-1]["eval/score"])
    merged = telemetry.history()
    assert [r["iteration"] for r in merged] == [0, 1, 2]
    assert merged[-1]["time/sync"] == pytest.approx(RECORDS[-1]["time/sync"]) and merged[-1]["kl"] == pytest.approx(RECORDS[-1]["kl"])


def test_extras_without_an_iteration_key_take_the_explicit_one(telemetry: RunTelemetry) -> None:
    telemetry.observe_record(learner_part(RECORDS[0]))
    telemetry.observe_record({"time/sync": 0.5, "eval/score": 0.25}, iteration=0)
    telemetry.observe_record({"time/sync": 0.5}, iteration=0)  # repeated: not observed twice
    assert value(telemetry, "crlhf_phase_duration_seconds_count", phase="weight_sync") == 1
    assert value(telemetry, "crlhf_iterations_total") == 1
    assert telemetry.history()[0]["eval/score"] == 0.25


def test_a_resumed_run_recounts_re_executed_iterations_and_drops_later_history(telemetry: RunTelemetry) -> None:
    for record in RECORDS:
        telemetry.observe_record(record)
    telemetry.observe_record(learner_part(RECORDS[1]))  # resumed from the checkpoint after iteration 0
    telemetry.observe_record(RECORDS[1])  # ... and the driver's completed record of it: not counted again
    assert [r["iteration"] for r in telemetry.history()] == [0, 1]
    assert value(telemetry, "crlhf_iterations_total") == 4  # work done, counted as done
    assert value(telemetry, "crlhf_phase_duration_seconds_count", phase="weight_sync") == 4
    assert value(telemetry, "crlhf_iteration") == 1
    telemetry.observe_record(learner_part(RECORDS[2]))
    telemetry.observe_record(RECORDS[2])
    assert value(telemetry, "crlhf_iterations_total") == 5
    assert value(telemetry, "crlhf_phase_duration_seconds_count", phase="train") == 5
    assert [r["iteration"] for r in telemetry.history()] == [0, 1, 2]


def test_bad_keys_never_create_series(telemetry: RunTelemetry) -> None:
    record = {
        "iteration": 0,
        "reward/meteor": 0.2,
        "reward/not-a-reward": 1.0,  # not one of the run's rewards: unbounded label values are refused
        "threshold/meteor": float("nan"),  # no threshold
        "violation/meteor": None,
        "multiplier/topic": "0.3",  # not a number
        "multiplier/kl": 1.0,  # "kl" is a weight's label, not a reward's
        "kl": True,  # bools are not numbers
        "tokens": -5,  # impossible: not counted
        "time/train": float("inf"),
    }
    telemetry.observe_record(record)
    present = samples(telemetry)
    labels = {dict(k).get("reward") for (_, k) in present}
    assert "not-a-reward" not in labels
    assert value(telemetry, "crlhf_reward_value", reward="meteor") == 0.2
    for name in ("crlhf_constraint_threshold", "crlhf_constraint_violation", "crlhf_constraint_multiplier", "crlhf_kl_divergence"):
        assert not any(n == name for n, _ in present), name
    assert value(telemetry, "crlhf_generated_tokens_total") == 0
    assert not any(n.startswith("crlhf_phase_duration_seconds") for n, _ in present)
    # The history keeps the charted keys of known rewards; a non-finite number becomes null (JSON has no NaN).
    assert telemetry.history()[0] == {"iteration": 0, "reward/meteor": 0.2, "threshold/meteor": None, "tokens": -5.0, "time/train": None}


def test_names_follow_prometheus_conventions(telemetry: RunTelemetry) -> None:
    for record in RECORDS:
        telemetry.observe_record(record)
    telemetry.observe_request("GET", "/v1/status", 200, 0.001)
    families = list(text_string_to_metric_families(telemetry.render().decode()))
    assert families
    for family in families:
        assert family.name.startswith("crlhf_"), family.name
        assert family.documentation, family.name
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples), family.name
        if family.type == "histogram":
            assert family.name.endswith("_seconds"), family.name
        assert not family.name.endswith("_total") or family.type == "counter"
        for s in family.samples:
            assert s.labels.get("run") == "mu-smoke", (s.name, s.labels)


def test_restart_counters_exist_at_zero_and_count(telemetry: RunTelemetry) -> None:
    for kind in ACTOR_KINDS:
        assert value(telemetry, "crlhf_actor_restarts_total", kind=kind) == 0
    telemetry.actor_restarted("rollout")
    telemetry.actor_restarted("rollout")
    assert value(telemetry, "crlhf_actor_restarts_total", kind="rollout") == 2
    assert value(telemetry, "crlhf_actor_restarts_total", kind="learner") == 0


def test_requests_are_counted_by_route_template(telemetry: RunTelemetry) -> None:
    telemetry.observe_request("PUT", "/v1/constraints/{name}", 202, 0.004)
    telemetry.observe_request("PUT", "/v1/constraints/{name}", 401, 0.001)
    telemetry.observe_request("PUT", "/v1/constraints/{name}", 202, 0.002)
    assert value(telemetry, "crlhf_control_requests_total", method="PUT", route="/v1/constraints/{name}", status="202") == 2
    assert value(telemetry, "crlhf_control_requests_total", method="PUT", route="/v1/constraints/{name}", status="401") == 1
    assert value(telemetry, "crlhf_control_request_duration_seconds_count", method="PUT", route="/v1/constraints/{name}") == 3
    assert value(telemetry, "crlhf_control_request_duration_seconds_sum", method="PUT", route="/v1/constraints/{name}") == pytest.approx(0.007)


def test_each_run_has_its_own_registry() -> None:
    a = RunTelemetry("a", REWARDS, process_metrics=False)
    b = RunTelemetry("b", REWARDS, process_metrics=False)  # same metric names: no clash
    a.observe_record(RECORDS[0])
    assert value(a, "crlhf_iterations_total") == 1 and value(b, "crlhf_iterations_total") == 0
    assert REGISTRY.get_sample_value("crlhf_iterations_total", {"run": "a"}) is None  # the global one is untouched


def test_process_metrics_describe_the_serving_process() -> None:
    t = RunTelemetry("p", REWARDS)
    names = {n for n, _ in samples(t)}
    assert "process_resident_memory_bytes" in names and "python_info" in names


def test_history_since_and_limit(telemetry: RunTelemetry) -> None:
    for record in RECORDS:
        telemetry.observe_record(record)
    assert [r["iteration"] for r in telemetry.history(1)] == [1, 2]
    assert [r["iteration"] for r in telemetry.history(0, limit=2)] == [1, 2]  # the latest ones
    assert [r["iteration"] for r in telemetry.history(0, limit=10)] == [0, 1, 2]
    assert telemetry.history(0, limit=0) == [] and telemetry.history(3) == []
    entry = telemetry.history(2)[0]
    assert "eval/metric/bleu" not in entry and "policy_loss" not in entry  # compact: only what is charted
    assert entry["multiplier/topic"] == pytest.approx(RECORDS[2]["multiplier/topic"])
    assert all(v is None or math.isfinite(v) for v in entry.values())


def test_history_is_bounded() -> None:
    t = RunTelemetry("h", REWARDS, process_metrics=False, history_size=5)
    for k in range(12):
        t.observe_record({"iteration": k, "reward/meteor": k / 10})
    assert [r["iteration"] for r in t.history()] == [7, 8, 9, 10, 11]
    assert value(t, "crlhf_iterations_total") == 12


def test_concurrent_requests_and_commits_lose_nothing(telemetry: RunTelemetry) -> None:
    def requests() -> None:
        for _ in range(500):
            telemetry.observe_request("GET", "/v1/status", 200, 0.001)

    threads = [threading.Thread(target=requests) for _ in range(4)]
    for th in threads:
        th.start()
    for k in range(200):
        telemetry.observe_record({"iteration": k, "tokens": 2})
        telemetry.render()
    for th in threads:
        th.join()
    assert value(telemetry, "crlhf_control_requests_total", method="GET", route="/v1/status", status="200") == 2000
    assert value(telemetry, "crlhf_generated_tokens_total") == 400


def test_run_label_is_required() -> None:
    with pytest.raises(ValueError, match="run label"):
        RunTelemetry("", REWARDS)


def test_seeded_history_shows_the_past_without_recounting_it(telemetry: RunTelemetry) -> None:
    """A restarted coordinator adopts metrics.jsonl: the live page keeps its past, rates see no burst."""
    telemetry.seed_history(RECORDS[:2])
    assert [r["iteration"] for r in telemetry.history()] == [0, 1]
    assert value(telemetry, "crlhf_iterations_total") == 0 and value(telemetry, "crlhf_generated_tokens_total") == 0
    assert value(telemetry, "crlhf_reward_value", reward="topic") == pytest.approx(RECORDS[1]["reward/topic"])
    assert value(telemetry, "crlhf_iteration") == 1
    telemetry.observe_record(RECORDS[1])  # the driver's additions for a seeded iteration: nothing recounted
    assert value(telemetry, "crlhf_iterations_total") == 0
    telemetry.observe_record(RECORDS[2])
    assert value(telemetry, "crlhf_iterations_total") == 1
    assert value(telemetry, "crlhf_generated_tokens_total") == RECORDS[2]["tokens"]
    assert [r["iteration"] for r in telemetry.history()] == [0, 1, 2]
