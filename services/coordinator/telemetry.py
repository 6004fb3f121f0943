"""Prometheus metrics of one run, fed from the per-iteration records the coordinator commits; which record
key becomes which metric, and why the coordinator exports them, is documented in
services/coordinator/metric_keys.py.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from services.coordinator.metric_keys import (
    ACTOR_KINDS,
    HISTORY_KEYS,
    HISTORY_PREFIXES,
    KL_TERM,
    PER_REWARD,
    PHASE_BUCKETS,
    PHASES,
    REQUEST_BUCKETS,
    SCALARS,
    number,
)

__all__ = ["CONTENT_TYPE_LATEST", "PHASES", "ACTOR_KINDS", "RunTelemetry"]


class RunTelemetry:
    """The Prometheus metrics of one run, in a registry of their own.

    Thread-safe: the coordinator commits from Ray's call thread while the control plane's worker threads
    record requests and render the exposition.
    """

    def __init__(
        self,
        run: str,
        reward_names: Iterable[str],
        registry: CollectorRegistry | None = None,
        *,
        objective: str | None = None,
        process_metrics: bool = True,
        history_size: int = 10_000,
    ) -> None:
        """`run` labels every series (the run directory's name is a good, unique choice); `reward_names`
        bounds the `reward` label to the run's rewards (plus "kl" for the KL term's weight), so a stray key
        cannot create unbounded series. `process_metrics` adds the standard process_*/python_info
        collectors of the serving process (the coordinator's memory and CPU)."""
        if not run:
            raise ValueError("run label must be a non-empty string")
        self.run = str(run)
        self.reward_names = list(reward_names)
        self._rewards = frozenset(self.reward_names)
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self._lock = threading.Lock()
        self._history: OrderedDict[int, dict[str, float | int | None]] = OrderedDict()
        self._history_size = history_size
        self._last_iteration: int | None = None
        self._counted: set[tuple[int, str]] = set()  # (iteration, what) already added to counters/histograms
        r = self.registry

        def gauge(name: str, doc: str, *labels: str) -> Gauge:
            return Gauge(name, doc, ("run", *labels), registry=r)

        per_reward = ("reward",)
        self.reward_value = gauge("crlhf_reward_value", "Mean reward of the iteration's rollout batch.", *per_reward)
        self.constraint_threshold = gauge(
            "crlhf_constraint_threshold", "Threshold of the reward's constraint in force for the iteration.", *per_reward
        )
        self.constraint_violation = gauge(
            "crlhf_constraint_violation",
            "How far the reward is on the wrong side of its threshold (0 = satisfied; |value - threshold| for eq).",
            *per_reward,
        )
        self.constraint_multiplier = gauge(
            "crlhf_constraint_multiplier", "Lagrange multiplier of the reward's constraint after the iteration.", *per_reward
        )
        self.reward_weight = gauge(
            "crlhf_reward_weight", "Weight of the reward (reward=\"kl\": of the KL term) in the combined objective.", *per_reward
        )
        self.eval_reward_value = gauge("crlhf_eval_reward_value", "Mean reward on the held-out evaluation set.", *per_reward)
        self.kl_divergence = gauge("crlhf_kl_divergence", "Mean per-token KL(policy || reference) of the batch, in nats.")
        self.kl_coefficient = gauge("crlhf_kl_coefficient", "KL penalty coefficient (beta) in force.")
        self.eval_score = gauge("crlhf_eval_score", "Held-out evaluation score (evaluation.score) of the policy.")
        self.nelder_mead_best_score = gauge("crlhf_nelder_mead_best_score", "Best score the Nelder-Mead threshold search has seen.")
        self.nelder_mead_simplex_spread = gauge(
            "crlhf_nelder_mead_simplex_spread", "Spread of the Nelder-Mead simplex (its convergence measure)."
        )
        self.rollout_tokens_per_second = gauge(
            "crlhf_rollout_tokens_per_second", "Generated tokens per second of rollout time in the last iteration."
        )
        self.iteration = gauge("crlhf_iteration", "Number of the last committed iteration (0-based).")
        self.last_iteration_timestamp = gauge(
            "crlhf_last_iteration_timestamp_seconds", "Unix time of the last committed iteration (stall detection)."
        )
        self.run_info = gauge("crlhf_run_info", "Always 1; carries the run's objective.", "objective")
        self.phase_duration = Histogram(
            "crlhf_phase_duration_seconds", "Wall-clock duration of one phase of an iteration.",
            ("run", "phase"), registry=r, buckets=PHASE_BUCKETS,
        )
        self.iteration_duration = Histogram(
            "crlhf_iteration_duration_seconds", "Wall-clock duration of a whole iteration as the driver saw it.",
            ("run",), registry=r, buckets=PHASE_BUCKETS,
        )
        self.generated_tokens = Counter("crlhf_generated_tokens", "Response tokens generated by rollouts.", ("run",), registry=r)
        self.iterations = Counter("crlhf_iterations", "Iterations committed by the coordinator.", ("run",), registry=r)
        self.actor_restarts = Counter("crlhf_actor_restarts", "Restarts of the run's Ray actors.", ("run", "kind"), registry=r)
        self.control_requests = Counter(
            "crlhf_control_requests", "Requests answered by the control plane.", ("run", "method", "route", "status"), registry=r
        )
        self.control_request_duration = Histogram(
            "crlhf_control_request_duration_seconds", "Time the control plane took to answer a request.",
            ("run", "method", "route"), registry=r, buckets=REQUEST_BUCKETS,
        )
        if objective is not None:
            self.run_info.labels(self.run, objective).set(1)
        for kind in ACTOR_KINDS:
            self.actor_restarts.labels(self.run, kind)
        self.generated_tokens.labels(self.run)
        self.iterations.labels(self.run)
        if process_metrics:
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)

    # --- iteration records -----------------------------------------------------------------------
    def observe_record(self, record: Mapping[str, Any], iteration: int | None = None) -> None:
        """Update the metrics from one iteration's record (see the module docstring for the keys).

        `iteration` defaults to `record["iteration"]`. Observing the same iteration again only updates
        gauges and adds phases/tokens not seen before for it, so the coordinator may observe the learner's
        record at commit and the driver's completed record later. An iteration number lower than the last
        one (a resumed run re-executing iterations after its checkpoint) starts counting afresh from it and
        drops the later history, as the driver drops the later lines of metrics.jsonl.
        """
        k = record.get("iteration", iteration)
        k = int(k) if isinstance(k, (int, float)) and not isinstance(k, bool) else None
        with self._lock:
            if k is not None:
                self._enter_iteration(k)
            self._set_gauges(record)
            self._count(record, k)
            if k is not None:
                self._remember(k, record)

    def _enter_iteration(self, k: int) -> None:
        last = self._last_iteration
        if last is not None and k < last:  # resumed: iterations k.. run again
            self._counted = {c for c in self._counted if c[0] < k}
            for stale in [i for i in self._history if i >= k]:
                del self._history[stale]
        self._last_iteration = k  # the iteration being observed is the newest one from here on
        # Bound the dedupe set: only the recent iterations can be observed again.
        if len(self._counted) > 4096:
            self._counted = {c for c in self._counted if c[0] >= k - 16}

    def _set_gauges(self, record: Mapping[str, Any]) -> None:
        run = self.run
        for key, raw in record.items():
            value = number(raw)
            if value is None:
                continue
            attribute = SCALARS.get(key)
            if attribute is not None:
                getattr(self, attribute).labels(run).set(value)
                continue
            for prefix, attribute in PER_REWARD.items():
                if key.startswith(prefix):
                    name = key[len(prefix):]
                    if self._known(prefix, name):
                        getattr(self, attribute).labels(run, name).set(value)
                    break

    def _known(self, prefix: str, name: str) -> bool:
        """Whether `<prefix><name>` names one of the run's rewards (or the KL term's weight)."""
        return name in self._rewards or (prefix == "weight/" and name == KL_TERM)

    def _kept(self, key: str) -> bool:
        """Whether the history keeps `key`: charted keys only, per-reward ones for known names only."""
        if key in HISTORY_KEYS:
            return True
        for prefix in PER_REWARD:
            if key.startswith(prefix):
                return key.startswith(HISTORY_PREFIXES) and self._known(prefix, key[len(prefix):])
        return key.startswith(HISTORY_PREFIXES)

    def _count(self, record: Mapping[str, Any], k: int | None) -> None:
        run = self.run

        def first_time(what: str) -> bool:
            if k is None:
                return True
            if (k, what) in self._counted:
                return False
            self._counted.add((k, what))
            return True

        for suffix, phase in PHASES.items():
            seconds = number(record.get(f"time/{suffix}"))
            if seconds is not None and seconds >= 0 and first_time(f"time/{suffix}"):
                self.phase_duration.labels(run, phase).observe(seconds)
        wall = number(record.get("time/wall"))
        if wall is not None and wall >= 0 and first_time("time/wall"):
            self.iteration_duration.labels(run).observe(wall)
        tokens = number(record.get("tokens"))
        if tokens is not None and tokens >= 0 and first_time("tokens"):
            self.generated_tokens.labels(run).inc(tokens)
        if k is not None and first_time("iteration"):
            self.iterations.labels(run).inc()
            self.iteration.labels(run).set(k)
            self.last_iteration_timestamp.labels(run).set(time.time())

    def _remember(self, k: int, record: Mapping[str, Any]) -> None:
        entry = self._history.get(k)
        if entry is None:
            entry = self._history[k] = {"iteration": k}
            while len(self._history) > self._history_size:
                self._history.popitem(last=False)
        for key, raw in record.items():
            if key == "iteration" or not self._kept(key):
                continue
            if isinstance(raw, bool) or not isinstance(raw, (int, float)):
                continue
            entry[key] = number(raw)  # NaN/inf -> None: JSON has no NaN

    def seed_history(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Adopt the records of iterations done before this process started (a restarted coordinator reading
        metrics.jsonl): history and gauges only. Counters and histograms are left alone — that work was
        counted by the previous process, and re-adding it would show as a burst in every rate()."""
        with self._lock:
            for record in records:
                k = record.get("iteration")
                if isinstance(k, bool) or not isinstance(k, (int, float)):
                    continue
                self._enter_iteration(int(k))
                self._set_gauges(record)
                self._remember(int(k), record)
                self._counted.update((int(k), what) for what in ("iteration", "tokens", "time/wall", *(f"time/{p}" for p in PHASES)))
            if self._last_iteration is not None:
                self.iteration.labels(self.run).set(self._last_iteration)

    def history(self, since: int = 0, limit: int | None = None) -> list[dict[str, float | int | None]]:
        """Compacted records of iterations ≥ `since`, oldest first; at most `limit` (the latest ones)."""
        with self._lock:
            out = [dict(entry) for k, entry in self._history.items() if k >= since]
        if limit is None:
            return out
        return out[-limit:] if limit > 0 else []

    # --- service events --------------------------------------------------------------------------
    def actor_restarted(self, kind: str) -> None:
        """Count one restart of an actor of `kind` (coordinator, learner, rollout, reward)."""
        self.actor_restarts.labels(self.run, kind).inc()

    def observe_request(self, method: str, route: str, status: int | str, seconds: float) -> None:
        """Count one control-plane request. `route` must be the route *template* ("/v1/constraints/{name}"),
        never the raw path, so the label's values stay bounded whatever clients send."""
        self.control_requests.labels(self.run, method, route, str(status)).inc()
        self.control_request_duration.labels(self.run, method, route).observe(max(0.0, seconds))

    # --- exposition -------------------------------------------------------------------------------
    def render(self) -> bytes:
        """The registry in Prometheus' text exposition format (serve with `CONTENT_TYPE_LATEST`)."""
        return generate_latest(self.registry)
