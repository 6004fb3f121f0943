"""Prometheus metrics of one run, fed from the per-iteration records the coordinator commits.

Why the coordinator: every iteration's record (rewards, thresholds, violations, multipliers, weights, KL,
phase timings, tokens) is produced by the learner and *committed* by the coordinator, so the coordinator
already sees everything worth exporting. Exporting from there keeps one writer per run, one scrape target
per run (the control plane's `/metrics`, on the head node) and correct counters on a multi-node cluster —
no per-node Ray metrics agent, no aggregation of partial series from several actors, no metric that
exists twice because two processes exported it. Ray's own system metrics (`ray_*`: node resources, object
store, actor states) are still exported by Ray's per-node agents; `deploy/prometheus/prometheus.yml`
scrapes those separately through Ray's service-discovery file.

Each `RunTelemetry` owns its `CollectorRegistry` (not prometheus_client's global one): a process can hold
several runs (tests, notebooks) without name clashes, and `/metrics` shows exactly this run.

Record keys → metrics (absent keys are ignored; non-finite values are skipped, a NaN threshold means
"no threshold"):

    reward/<r>        crlhf_reward_value{reward=r}                 gauge
    threshold/<r>     crlhf_constraint_threshold{reward=r}         gauge
    violation/<r>     crlhf_constraint_violation{reward=r}         gauge   (≥ 0 for ge/le, |v−θ| for eq)
    multiplier/<r>    crlhf_constraint_multiplier{reward=r}        gauge
    weight/<r>        crlhf_reward_weight{reward=r}                gauge   (r may be "kl": the KL term's weight)
    kl                crlhf_kl_divergence                          gauge   (nats per token)
    kl_coef           crlhf_kl_coefficient                         gauge
    eval/score        crlhf_eval_score                             gauge
    eval/reward/<r>   crlhf_eval_reward_value{reward=r}            gauge
    nm/best_score     crlhf_nelder_mead_best_score                 gauge
    nm/simplex_spread crlhf_nelder_mead_simplex_spread             gauge
    time/<phase>      crlhf_phase_duration_seconds{phase}          histogram (rollout, reward, train,
                                                                             weight_sync ← time/sync, eval)
    time/wall         crlhf_iteration_duration_seconds             histogram
    tokens            crlhf_generated_tokens_total                 counter
    tokens_per_second crlhf_rollout_tokens_per_second              gauge
    iteration         crlhf_iterations_total (counter), crlhf_iteration (gauge),
                      crlhf_last_iteration_timestamp_seconds (gauge)

Every metric carries `run`. A record may be observed more than once (e.g. the learner's record at commit,
then the driver's completed record with `time/sync` and the evaluation): counters and histograms count
each iteration once, gauges take the latest value. The observed records are also kept, compacted, as the
run's recent history for the live page (`history`).
"""

from __future__ import annotations

import math
from typing import Any

# Record key suffix of `time/<key>` -> `phase` label value. Weight sync is spelled out: "sync" alone is
# ambiguous on a dashboard next to checkpoint syncs.
PHASES: dict[str, str] = {
    "rollout": "rollout",
    "reward": "reward",
    "train": "train",
    "sync": "weight_sync",
    "eval": "eval",
}
# Actor kinds whose restart counters exist (at 0) from the start, so "no restarts" is a visible 0 rather
# than a missing series (Prometheus' advice for counters with known label values).
ACTOR_KINDS: tuple[str, ...] = ("coordinator", "learner", "rollout", "reward")

# Iteration phases span four orders of magnitude: a tiny CPU smoke run syncs weights in ~10 ms, a GPU
# run's rollout can take minutes. Buckets roughly ×2–2.5 apart keep quantile error under ~50 %.
PHASE_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0,
    1000.0, 2500.0, 5000.0, float("inf"),
)
REQUEST_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, float("inf"),
)

# Per-reward gauges: record key prefix -> attribute holding the gauge.
PER_REWARD: dict[str, str] = {
    "reward/": "reward_value",
    "threshold/": "constraint_threshold",
    "violation/": "constraint_violation",
    "multiplier/": "constraint_multiplier",
    "weight/": "reward_weight",
    "eval/reward/": "eval_reward_value",
}
# Run-level gauges: record key -> attribute.
SCALARS: dict[str, str] = {
    "kl": "kl_divergence",
    "kl_coef": "kl_coefficient",
    "eval/score": "eval_score",
    "nm/best_score": "nelder_mead_best_score",
    "nm/simplex_spread": "nelder_mead_simplex_spread",
    "tokens_per_second": "rollout_tokens_per_second",
}
# Record keys kept in the history served to the live page: everything it charts, nothing else (the full
# record, with ~50 evaluation metrics, stays in metrics.jsonl).
HISTORY_PREFIXES = ("reward/", "threshold/", "violation/", "multiplier/", "weight/", "time/", "nm/")
HISTORY_KEYS = frozenset({"iteration", "kl", "kl_coef", "tokens", "tokens_per_second", "eval/score"})
# The KL term has a weight of its own in some objectives (weight/kl); it is not a reward.
KL_TERM = "kl"


def number(value: Any) -> float | None:
    """A finite float, or None for anything else (None, NaN, inf, bools, strings, tensors' repr...)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None
