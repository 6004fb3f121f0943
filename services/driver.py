"""The iteration loop. It only passes object refs between actors: prompts in, metrics records out.

Per iteration k:
  rollout actors generate their shard ─┬─► reward actors score all shards (in parallel)
  coordinator.begin_iteration(k) ──────┼─► learner.train(k, objective state, shards, scores)
                                       └─► coordinator.commit(k, result) ─► metrics line
  weight sync (services/rollout/weight_sync.py): object store on CPU, NCCL broadcast on GPU + vLLM

With `trainer.async_rollout=true` the rollout of iteration k+1 is submitted right after iteration k's
update, before the weight sync, so it runs on the rollout actors (with the weights of version k) while
the learner trains; the learner corrects the one-update staleness (services/ppo/off_policy.py).
Checkpoints and stops are drain points: see `Driver._discard_prefetch`.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import yaml
from tqdm import tqdm

from services.config.schema import RootConfig
from services.data.dialogues import DialogueExample, PromptSampler
from services.evaluation.run_eval import evaluation_record
from services.ppo.guards import UnsafeUpdate
from services.rollout.weight_sync import make_weight_sync
from services.run import actors, checkpoints, recovery
from services.run.faults import RetryBudget, innermost, is_lost_actor, root_cause  # root_cause: also for launch
from services.run.signals import StopRequest, stop_on_signals
from services.run.storage import RunMirror
from services.run.console import ITERATION_LOGGER

log = logging.getLogger("crlhf")
iteration_log = logging.getLogger(ITERATION_LOGGER)


class RunError(RuntimeError):
    """The run stopped on an error; the message says what and where the last checkpoint is."""


def live_numbers(record: dict[str, Any]) -> str:
    """The progress bar's postfix: each reward (against its threshold), KL, seconds per iteration."""
    parts = []
    for key, value in record.items():
        if key.startswith("reward/"):
            name = key.split("/", 1)[1]
            threshold = record.get(f"threshold/{name}")
            parts.append(f"{name} {value:.3f}" + (f"/{threshold:.3f}" if threshold is not None else ""))
    parts.append(f"kl {record.get('kl', 0.0):.3f}")
    return " ".join(parts)


def format_line(record: dict[str, Any]) -> str:
    rewards = " ".join(
        f"{k.split('/', 1)[1]}={v:.3f}" + (f"(θ={record['threshold/' + k.split('/', 1)[1]]:.3f})" if "threshold/" + k.split("/", 1)[1] in record else "")
        for k, v in record.items()
        if k.startswith("reward/")
    )
    return (
        f"it {record['iteration']:>4} | {rewards} | kl {record.get('kl', 0.0):.4f} | "
        f"{record['tokens_per_second']:.0f} tok/s | rollout {record['time/rollout']:.1f}s "
        f"reward {record['time/reward']:.1f}s train {record['time/train']:.1f}s sync {record.get('time/sync', 0.0):.2f}s"
        + (f" | eval {record['eval/score']:.3f} ({record['time/eval']:.0f}s)" if "eval/score" in record else "")
    )


@dataclass
class PendingRollout:
    """An iteration's rollout, submitted: shard refs (rollout-actor order), score refs (reward-actor order),
    and the prompt sampler's position before its batch was drawn (to rewind a discarded prefetch)."""

    iteration: int
    shards: list[Any]
    scores: list[Any]
    sampler_before: dict[str, Any]


class Driver:
    def __init__(
        self,
        config: RootConfig,
        run_dir: Path,
        examples: list[DialogueExample],
        eval_examples: list[DialogueExample] | None = None,
    ) -> None:
        self.config = config
        self.eval_examples = (eval_examples or [])[: config.evaluation.max_examples]
        self.run_dir = run_dir
        self.metrics_path = run_dir / "metrics.jsonl"
        self.checkpoints = run_dir / "checkpoints"
        self.mirror = RunMirror(config.run.storage, run_dir) if config.run.storage else None  # run.storage
        self.sampler = PromptSampler(examples, seed=config.data.seed)
        self.actors = actors.start(config, run_dir)
        self.coordinator, self.learner = self.actors.coordinator, self.actors.learner
        self.rollout, self.rewards = self.actors.rollout, self.actors.rewards
        self._told_waiting = False
        try:
            self.pids = actors.wait_ready(self.actors, config, self._waiting)
        except BaseException:
            self.close()  # pending actors would otherwise keep their claim on the cluster
            raise
        if self._told_waiting:
            self.coordinator.set_waiting.remote(None)
        recovery.write_pids(self)
        self.start_iteration = 0
        self.version = 0  # updates the learner holds = the weights version the engines hold = the next iteration
        self.budget = RetryBudget(config.fault.max_retries)
        self.stop_request = StopRequest()  # replaced by the signal handlers' while `run` runs
        self.origin: tuple[dict[str, Any], dict[str, Any]] | None = None  # coordinator + sampler state at iteration 0
        self._current: PendingRollout | None = None  # the rollout of the iteration in flight
        self.weight_sync = make_weight_sync(config, self.learner, self.rollout)
        self.weight_sync.setup()
        self._pending: PendingRollout | None = None  # the prefetched rollout (trainer.async_rollout)
        self._initial_evaluation: dict[str, Any] | None = None  # measured for threshold=auto before iteration 0

    def _waiting(self, names: list[str]) -> None:
        log.warning("waiting for resources: %s (at most run.actor_start_timeout_s=%g s; /v1/status says so, its URL is in %s)",
                    ", ".join(names), self.config.run.actor_start_timeout_s, self.run_dir / "control.json")
        self.coordinator.set_waiting.remote(", ".join(names))
        self._told_waiting = True

    # --- checkpoints (services/run/checkpoints.py) ---------------------------------------------
    def save_checkpoint(self, iteration: int) -> Path:
        self._discard_prefetch()  # the saved sampler position must not skip a batch nobody trained on
        path = checkpoints.save(
            self.checkpoints, iteration, self.learner, self.coordinator, self.sampler.state_dict(), self.config.checkpoint.keep_last
        )
        if self.mirror is not None:
            self.mirror.sync()
        return path

    def restore(self) -> None:
        """Continue from the latest usable checkpoint: same iteration counter, objective state, data position.
        A damaged checkpoint is refused, naming the file, and the previous one is used (services/run/recovery.py)."""
        found = recovery.load_newest(self)
        if found is None:
            log.info("no checkpoint in %s: starting from iteration 0", self.run_dir)
            return
        self.start_iteration = found.iteration + 1
        log.info("resumed from %s at iteration %d", found.directory, self.start_iteration)

    def _discard_prefetch(self) -> None:
        """Drain at a checkpoint or stop boundary: forget the prefetched rollout and rewind the sampler to
        before its batch. The next iteration (or a run resumed from the checkpoint) then draws the same
        examples with the same seeds and generates them with the current weights, so a run that continues
        after a requested checkpoint and a run resumed from it are identical, and no batch is lost or
        trained on twice. The discarded generation still finishes on the actors; its results are dropped.
        Periodic checkpoints never find a prefetch (`run` does not prefetch across them)."""
        if self._pending is not None:
            self.sampler.load_state_dict(self._pending.sampler_before)
            self._pending = None

    # --- the loop --------------------------------------------------------------------------------
    def evaluate(self) -> dict[str, float]:
        """Generate for the held-out examples with the current policy and score them (same sampling
        settings as training, a fixed seed so successive evaluations differ only by the policy)."""
        start = time.perf_counter()
        n = len(self.rollout)
        shards = [
            actor.generate.remote(self.eval_examples[rank::n], seed=self.config.evaluation.seed + rank, weights_version=self.version)
            for rank, actor in enumerate(self.rollout)
        ]
        results = ray.get([actor.score.remote(*shards) for actor in self.rewards])
        means = {name: _finite_mean(v) for r in results for name, v in r["scores"].items()}  # on_error=skip gives NaNs
        generated = ray.get(shards)  # only the texts are used; a few hundred short strings
        record = evaluation_record(
            [t for s in generated for t in s.generation.texts],
            [e.reference for s in generated for e in s.examples],
            {name: means[name] for name in self.config.rewards},
            self.config.evaluation.score,
            self.config.evaluation.bounds,
        )
        record["time/eval"] = time.perf_counter() - start
        return record

    def _evaluates_before(self, k: int) -> bool:
        every = self.config.evaluation.every
        return bool(every and self.eval_examples and k % every == 0)

    def _submit_rollout(self, k: int) -> PendingRollout:
        """Draw iteration k's prompts, submit their generation and scoring; returns refs only."""
        cfg = self.config
        before = self.sampler.state_dict()
        examples = self.sampler.next_batch(cfg.rollout.batch_size)
        n = len(self.rollout)
        group = cfg.rollout.samples_per_prompt
        # K completions of each prompt, kept together in one shard so the learner sees contiguous groups.
        shards = [
            actor.generate.remote([e for e in examples[rank::n] for _ in range(group)], seed=cfg.trainer.seed * 100_003 + k * 101 + rank,
                                  weights_version=self.version)
            for rank, actor in enumerate(self.rollout)
        ]
        scores = [actor.score.remote(*shards, iteration=k) for actor in self.rewards]
        return PendingRollout(k, shards, scores, before)

    def _prefetches_after(self, k: int) -> bool:
        """Overlap the next rollout with this update? Not past the last iteration, and not across a periodic
        checkpoint, so that a run resumed from any checkpoint repeats the uninterrupted run exactly."""
        cfg = self.config
        at_checkpoint = bool(cfg.checkpoint.every) and (k + 1) % cfg.checkpoint.every == 0
        return cfg.trainer.async_rollout and k + 1 < cfg.trainer.iterations and not at_checkpoint

    def measure_auto_thresholds(self) -> dict[str, Any] | None:
        """threshold=auto: evaluate the untrained policy on held-out data and set each such threshold from it
        (through the coordinator, so it is audited and applies from iteration 0). Returns the evaluation, which
        then also serves as iteration 0's when evaluation.every asks for one."""
        from services.objectives import spec as objective_spec
        from services.rewards.config import auto_threshold
        from services.rewards.registry import reward_class

        launch = objective_spec.ObjectiveSpec.at_launch(self.config.objective, self.config.rewards)
        constrained = objective_spec.build(launch, self.config.rewards).constrained_rewards()
        auto = {n: r for n, r in self.config.rewards.items() if r.threshold == "auto" and n in constrained}
        if not auto or self.start_iteration > 0:
            return None
        evaluation = self.evaluate()
        directions = dict(zip(self.config.rewards, launch.directions))
        for name, reward in auto.items():
            start = evaluation[f"eval/reward/{name}"]
            theta = auto_threshold(start, directions[name], reward.auto_margin, reward_class(reward.kind).score_range)
            ray.get(self.coordinator.set_threshold.remote(name, theta, "thresholds=auto"))
            log.info("threshold=auto: %s starts at %.4f on held-out data → θ = %.4f (%s, margin %.0f%%)",
                     name, start, theta, directions[name], 100 * reward.auto_margin)
        self._initial_evaluation = evaluation
        return evaluation

    def iteration(self, k: int) -> dict[str, Any]:
        initial, self._initial_evaluation = self._initial_evaluation, None
        if initial is not None and k == 0:
            evaluation = initial if self._evaluates_before(k) else None
        else:
            evaluation = self.evaluate() if self._evaluates_before(k) else None
        rollout = self._pending if self._pending is not None and self._pending.iteration == k else self._submit_rollout(k)
        self._pending, self._current = None, rollout
        state = self.coordinator.begin_iteration.remote(k)
        result = self.learner.train.remote(k, state, evaluation, len(rollout.shards), *rollout.shards, *rollout.scores)
        record_ref = self.coordinator.commit.remote(k, result)
        if self._prefetches_after(k):
            # Queued on every rollout actor ahead of the weight sync below, so it samples with the weights
            # of version k while the learner trains on iteration k: one update stale when trained on.
            self._pending = self._submit_rollout(k + 1)
        # time/sync runs from the end of the update to every engine holding the new weights, so it covers
        # the learner's state copy and the object-store transfer, not only the engines' load.
        loads = self.weight_sync.push(k + 1)
        ray.wait([result], fetch_local=False)
        start = time.perf_counter()
        try:
            ray.get(loads)
            lost_in_sync = None
        except ray.exceptions.RayError as err:
            if not is_lost_actor(err):
                raise
            lost_in_sync = err
        sync_seconds = time.perf_counter() - start
        record = dict(ray.get(record_ref))  # raises when the update did not commit: the loop re-runs iteration k
        if lost_in_sync is not None:  # committed, but an engine (or the learner) was lost on the way to the engines
            recovery.after_lost_sync(self, k, lost_in_sync)
        self.version = k + 1
        record["time/sync"] = sync_seconds
        record.update(evaluation or {})
        return record

    def honour_controls(self, completed: int) -> bool:
        """Apply REST requests at an iteration boundary: checkpoint now, pause (poll every second), stop.
        Returns False when the run should stop."""
        announced = False
        while True:
            if self.stop_request:
                return False
            controls = ray.get(self.coordinator.poll_controls.remote())
            if controls["checkpoint"] and completed >= 0:
                path = self.save_checkpoint(completed)
                ray.get(self.coordinator.ack_checkpoint.remote(str(path)))
                log.info("checkpoint on request: %s", path)
            if controls["stop"]:
                log.info("stop requested: ending after iteration %d", completed)
                return False
            if not controls["paused"]:
                if announced:
                    log.info("resumed")
                return True
            if not announced:
                log.info("paused after iteration %d; waiting for resume", completed)
                announced = True
            time.sleep(1.0)

    def close(self) -> None:
        """Stop the control plane and release every actor (their GPUs/ports) before returning."""
        try:
            ray.get(self.coordinator.shutdown.remote(), timeout=30)
        except ray.exceptions.RayError:
            pass
        self._pending = None
        for actor in self.actors.all():
            ray.kill(actor)
        if self.actors.placement_group is not None:
            from ray.util.placement_group import remove_placement_group

            remove_placement_group(self.actors.placement_group)

    def _step(self, k: int, bar: Any) -> dict[str, Any]:
        """Iteration k and its metrics line."""
        cfg = self.config
        t0 = time.perf_counter()
        last = self.iteration(k)
        last["time/wall"] = time.perf_counter() - t0
        with self.metrics_path.open("a") as f:
            f.write(json.dumps(last) + "\n")
        self.coordinator.observe.remote(last)  # Prometheus/live page: adds sync, wall and eval times
        if k % cfg.trainer.log_every == 0:
            iteration_log.info(format_line(last))  # train.log; the bar shows the live numbers
        bar.update(1)
        bar.set_postfix_str(live_numbers(last), refresh=True)
        return last

    def _checkpoint_after(self, k: int) -> int:
        """The periodic checkpoint after iteration k, if one is due; returns the next iteration: k + 1, or a
        checkpoint's + 1 when an actor lost during the save took the run back (a save cut short is never
        used, services/run/checkpoints.py)."""
        if not (self.config.checkpoint.every and (k + 1) % self.config.checkpoint.every == 0):
            return k + 1
        try:
            self.save_checkpoint(k)
            return k + 1
        except ray.exceptions.RayError as err:
            if not is_lost_actor(err) or not self.budget.spend():
                raise
            following = recovery.recover(self, k + 1, err)
            if following == k + 1:  # nothing rolled back: the state is still iteration k's
                self.save_checkpoint(k)
            return following

    def run(self) -> dict[str, Any]:
        """The iterations, then the final checkpoint, export and evaluation. SIGINT/SIGTERM are handled for the
        whole of it (services/run/signals.py): a second signal during the final checkpoint also stops at once."""
        with stop_on_signals() as self.stop_request:
            return self._run()

    def _run(self) -> dict[str, Any]:
        cfg = self.config
        last: dict[str, Any] = {}
        completed = self.start_iteration - 1
        stopped = False
        self.measure_auto_thresholds()
        if self.start_iteration == 0:  # what a lost learner rolls back to before the first checkpoint
            self.origin = (ray.get(self.coordinator.state_dict.remote()), self.sampler.state_dict())
        bar = tqdm(total=cfg.trainer.iterations, initial=self.start_iteration, desc="iterations", unit="it", dynamic_ncols=True)
        k = self.start_iteration
        try:
            while k < cfg.trainer.iterations:
                if not self.honour_controls(completed):
                    stopped = True
                    break
                try:
                    last = self._step(k, bar)
                except ray.exceptions.RayError as err:  # a lost actor: restore it, run the iteration again
                    if not is_lost_actor(err) or not self.budget.spend():
                        raise
                    k = recovery.recover(self, k, err)  # the iteration to run next: k, or a checkpoint's + 1
                    completed = k - 1
                    bar.n = k
                    continue
                self.budget.succeeded()
                completed = k
                k = self._checkpoint_after(k)
                completed = min(completed, k - 1)
            stopped = stopped or bool(self.stop_request)
        except (ray.exceptions.RayError, ValueError) as err:
            where = self._save_after_error(completed, err)
            spent = is_lost_actor(err) and self.budget.used >= self.budget.max_retries
            again = " (the fault repeated: fault.max_retries spent)" if spent else ""
            raise RunError(f"iteration {completed + 1} failed{again}: {root_cause(err)}\n{where}") from None
        finally:
            bar.close()
        try:
            recovery.refresh_pids(self)  # actors.json ends with the processes that finished the run; restarts logged
        except ray.exceptions.RayError:
            pass
        if completed >= 0:
            log.info("final checkpoint: %s", self.save_checkpoint(completed))
            ray.get(self.learner.export.remote(str(self.run_dir / "final")))
            log.info("trained model: %s (Hugging Face format)", self.run_dir / "final")
        if stopped:
            ray.get(self.coordinator.mark_stopped.remote())
            return last
        if self.config.evaluation.every and self.eval_examples and completed >= self.start_iteration:
            final = {"after_iteration": completed, **self.evaluate()}
            (self.run_dir / "final_eval.json").write_text(json.dumps(final, indent=1))
            ray.get(self.coordinator.record_evaluation.remote(completed + 1, final))
            log.info("final evaluation: score %.4f, %s", final["eval/score"],
                     " ".join(f"{k.rsplit('/', 1)[1]}={v:.3f}" for k, v in final.items() if k.startswith("eval/reward/")))
        return last

    def _save_after_error(self, completed: int, err: BaseException) -> str:
        resume = f"resume with resume={self.run_dir}"
        if isinstance(innermost(err), UnsafeUpdate):  # the learner may have stepped into the refused update
            found = checkpoints.latest_iteration(self.checkpoints)
            kept = f"the last checkpoint is after iteration {found}" if found is not None else "there is no checkpoint yet"
            return f"the learner's state after the refused update is not saved; {kept}; {resume}"
        if completed < 0:
            return "no iteration completed; nothing to resume"
        try:
            path = self.save_checkpoint(completed)
            return f"state after iteration {completed} saved to {path}; {resume}"
        except ray.exceptions.RayError as save_err:  # e.g. the learner itself died
            return f"could not checkpoint after the error ({root_cause(save_err)}); resume from the last periodic checkpoint"


def _finite_mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


def write_config(config: RootConfig, run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
