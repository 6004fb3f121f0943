"""Entry point: `python -m services.launch [key=value ...]` (also as a Ray job).

    python -m services.launch objective=xi_ppo rewards.meteor.threshold=0.23 trainer.iterations=50
    python -m services.launch preset=smoke --cfg      # print the resolved config with help, then exit
    python -m services.launch resume=runs/ppo-20261122-140000 trainer.iterations=100
    python -m services.launch @overrides.txt trainer.iterations=50   # overrides from a file, then more
    python -m services.launch data.source=my.jsonl --check   # only the preflight: config, data, rewards, cluster

Before any cluster is joined or started, a preflight reads the data (every split the run uses) and checks
each reward's needs; a problem is one line naming the file, line, column, reward or resource and the fix,
exit code 2 (`--debug` adds the traceback). `--check` stops after the preflight (and the cluster check: an
existing cluster's resources, or what a local one would get) with "preflight ok: ...", exit code 0.

@FILE reads overrides from FILE, one per line, in place of the argument (so later arguments win); blank
lines and # comments (a whole line, or after whitespace) are ignored. `python -m services.thresholds.proxy_points
--out FILE` writes such a file.
"""

from __future__ import annotations

import logging
import math
import os
import re
import sys
import time
import traceback
from pathlib import Path

import yaml

from services.config.overrides import ConfigError, build_config, split_override
from services.run.cluster import ClusterUnreachable
from services.run.preflight import PreflightError, check_cluster, needs, reward_actor_count

log = logging.getLogger("crlhf")


def expand_argument_files(argv: list[str]) -> list[str]:
    """Replace every `@FILE` argument by the overrides in FILE (one per line, # comments allowed).

    Lines are not split further, so a value may contain spaces (`run.name=my run`); a `#` starts a comment
    only at the start of a line or after whitespace, as in YAML, so `key=a#b` keeps its `#`. Files do not
    nest: a line starting with @ is an error rather than a silent second level of indirection.
    """
    out: list[str] = []
    for arg in argv:
        if not arg.startswith("@"):
            out.append(arg)
            continue
        path = Path(arg[1:])
        try:
            text = path.read_text()
        except OSError as err:
            raise ConfigError(f"cannot read override file '{path}': {err.strerror or err}") from None
        for number, line in enumerate(text.splitlines(), start=1):
            entry = re.sub(r"(^|\s)#.*$", "", line).strip()
            if not entry:
                continue
            if entry.startswith("@"):
                raise ConfigError(f"{path}:{number}: override files do not nest ('{entry}')")
            out.append(entry)
    return out


def resolve_run(overrides: list[str]) -> tuple[Path | None, dict | None]:
    """For resume=…: the run directory and its saved config (the base the other overrides apply to)."""
    resume = dict(split_override(a) for a in overrides).get("resume")
    if resume in (None, False):
        return None, None
    if resume is True:
        probe = build_config([a for a in overrides if not a.startswith("resume=")])
        if probe.run.name is None:
            raise ConfigError("resume=true needs run.name=NAME (or pass the run directory: resume=PATH)")
        run_dir = probe.run.root / probe.run.name
    else:
        run_dir = Path(str(resume))
    if not (run_dir / "config.yaml").exists():
        raise ConfigError(f"resume: no run at {run_dir} (config.yaml missing)")
    return run_dir, yaml.safe_load((run_dir / "config.yaml").read_text())


def print_config(config) -> None:
    from services.config.doc import render_config

    print(render_config(config))


def connect_ray(address: str | None, needed_cpus: float) -> None:
    """Join the cluster `address` names (or the one this machine runs), else start a local one. Each actor
    learns its run's train.log from its own runtime_env (services/run/actors.py), not from the job's."""
    import ray

    from services.run.console import route_ray_logs

    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    if ray.is_initialized():  # embedding callers (tests, notebooks) may have connected already
        return
    route_ray_logs()
    runtime_env = {"env_vars": {"HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}}
    from services.run.cluster import choose

    choice = choose(address)  # raises ClusterUnreachable for an explicit address that does not answer
    if choice.warning:
        log.warning("%s", choice.warning)
    if choice.address is not None:
        ray.init(address=choice.address, runtime_env=runtime_env, logging_level=logging.WARNING)
        log.info("connected to the Ray cluster at %s (from %s)", choice.address, choice.source)
        return
    cpus = local_cpus(needed_cpus)
    os.environ.pop("RAY_ADDRESS", None)
    ray.init(address="local", num_cpus=cpus, include_dashboard=False, runtime_env=runtime_env, logging_level=logging.WARNING)
    log.info("started a local Ray cluster with %s logical CPUs", cpus)


def local_cpus(needed_cpus: float) -> int:
    # Logical CPUs only gate scheduling: phases run one after another, so oversubscribing a small
    # machine is harmless and lets every actor start.
    return max(os.cpu_count() or 1, math.ceil(needed_cpus))


def ray_get_address(driver) -> str:
    import ray

    return ray.get(driver.coordinator.address.remote()) or "disabled"


FLAGS = ("--cfg", "--check", "--debug")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from services.run.console import console_logging

    console_logging()
    if "-h" in argv or "--help" in argv:
        print(__doc__)
        return 0
    debug = "--debug" in argv
    try:
        argv = expand_argument_files(argv)
        flags = {a for a in argv if a in FLAGS}
        overrides = [a for a in argv if a not in FLAGS]
        run_dir, base = resolve_run(overrides)
        config = build_config([a for a in overrides if not a.startswith("resume=")], base)
        if "--cfg" in flags:
            print_config(config)
            return 0
        examples, eval_examples = preflight(config)  # before any cluster is joined or started
        if "--check" in flags:
            print(f"preflight ok: {check_summary(config, examples, eval_examples)}; {check_cluster_only(config)}")
            return 0
    except USER_ERRORS as err:
        if debug:
            traceback.print_exc()
        print(f"crlhf: {err}", file=sys.stderr)
        return 2

    if run_dir is None:
        name = config.run.name or f"{config.objective.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        run_dir = config.run.root / name
        if (run_dir / "checkpoints").exists():
            print(f"crlhf: run directory {run_dir} already has checkpoints; pass resume=true to continue it", file=sys.stderr)
            return 2
    from services.driver import write_config
    from services.run.console import run_log

    write_config(config, run_dir)

    close_log = run_log(run_dir)
    try:
        return _train(config, run_dir, base, examples, eval_examples)
    finally:
        close_log()


class DataProblem(ValueError):
    """A DataError, worded for the console ("data: ...")."""

    def __str__(self) -> str:
        return f"data: {self.args[0]}"


USER_ERRORS: tuple[type[Exception], ...] = (ConfigError, DataProblem, PreflightError, ClusterUnreachable)


def preflight(config) -> tuple[list, list]:
    """The data (every split the run reads), each reward's needs and the evaluation settings; raises a
    USER_ERRORS error naming the file, line, column, reward or setting, with the fix."""
    from services.data.dialogues import DataError, load_examples
    from services.evaluation.run_eval import score_bounds
    from services.run.preflight import check_policy_model, check_rewards

    check_policy_model(config)
    try:
        examples = load_examples(config.data, "train")
        held_out = config.data.eval_split is not None or config.data.eval_fraction > 0
        if config.evaluation.every and not held_out:
            log.warning("no held-out split (data.eval_fraction=0, no data.eval_split): evaluation is off")
        measures = any(r.threshold == "auto" for r in config.rewards.values())  # threshold=auto evaluates first
        eval_examples = load_examples(config.data, "eval") if (config.evaluation.every or measures) and held_out else []
    except DataError as err:
        raise DataProblem(str(err)) from err
    check_rewards(config, examples + eval_examples)
    try:
        score_bounds(config.evaluation.score, config.evaluation.bounds)
    except KeyError as err:
        raise PreflightError(f"evaluation.bounds: {err.args[0]}") from None
    return examples, eval_examples


def check_summary(config, examples: list, eval_examples: list) -> str:
    rewards = ", ".join(f"{name} ({reward.kind})" for name, reward in config.rewards.items())
    held_out = f" / {len(eval_examples)} eval" if eval_examples else ""
    return (f"objective {config.objective.name}; {len(examples)} train{held_out} examples from {config.data.source}; "
            f"rewards {rewards}")


def check_cluster_only(config) -> str:
    """The cluster part of `--check`: an existing cluster is asked for its resources (joined as a driver and
    left; no actor starts); none is started — the line says what a local one would get."""
    from services.run.cluster import choose

    wanted = needs(config, reward_actor_count(config))
    needed = sum(n.cpus for n in wanted)
    choice = choose(config.run.ray_address)
    if choice.address is None:
        return (f"no Ray cluster to join ({choice.warning or choice.source}): a run starts a local one with "
                f"{local_cpus(needed)} logical CPUs for the {needed:g} its actors ask for")
    import ray

    if ray.is_initialized():  # an embedding caller (notebook, test) is connected already: ask, do not leave
        resources = ray.cluster_resources()
    else:
        ray.init(address=choice.address, logging_level=logging.WARNING)
        try:
            resources = ray.cluster_resources()
        finally:
            ray.shutdown()
    problem = check_cluster(wanted, resources)
    if problem is not None:
        raise PreflightError(problem)
    return (f"the Ray cluster at {choice.address} (from {choice.source}) has {resources.get('CPU', 0):g} CPUs and "
            f"{resources.get('GPU', 0):g} GPUs, the run needs {needed:g} CPUs and {sum(n.gpus for n in wanted):g} GPUs")


def _train(config, run_dir: Path, base: dict | None, examples: list, eval_examples: list) -> int:
    from ray.exceptions import RayError

    from services.driver import Driver, RunError, root_cause
    from services.run.actors import ActorsPending, reward_groups
    from services.run.checkpoints import CheckpointError
    from services.run.signals import StopNow

    log.info("run directory: %s", run_dir.resolve())

    import ray

    from services.run.cluster import ClusterUnreachable
    from services.run.preflight import check_cluster, needs

    wanted = needs(config, len(reward_groups(config)))  # what the actors will ask Ray for
    needed = sum(n.cpus for n in wanted)

    try:
        connect_ray(config.run.ray_address, needed)
    except ClusterUnreachable as err:
        log.error("%s", err)
        return 2
    problem = check_cluster(wanted, ray.cluster_resources())
    if problem is not None:
        log.error("%s", problem)
        return 2
    try:
        driver = Driver(config, run_dir, examples, eval_examples)
    except ActorsPending as err:  # an actor Ray cannot place: say which and why instead of waiting forever
        log.error("%s", err)
        return 2
    except RayError as err:  # an actor failed to start, e.g. the control plane's port is taken
        log.error("%s", root_cause(err))
        return 1
    resume = f"python -m services.launch resume={run_dir.resolve()}"
    try:
        if base is not None:
            driver.restore()
        log.info("control plane: %s", ray_get_address(driver))
        for rank, described in enumerate(ray.get([actor.describe.remote() for actor in driver.rollout])):
            log.info("rollout %d: %s on %s (%s)", rank, described["backend"], described["device"], described["reason"])
        last = driver.run()
    except (RunError, CheckpointError) as err:
        log.error("%s", err)
        return 1
    except RayError as err:  # an actor failed to start, e.g. the control plane's port is taken
        log.error("%s", root_cause(err))
        return 1
    except KeyboardInterrupt:  # a second SIGINT/SIGTERM (StopNow): no checkpoint now; the last one on disk is the resume point
        if driver.stop_request.forced is None:
            raise
        log.error("%s; resume from the last checkpoint with: %s", StopNow(driver.stop_request.forced), resume)
        return 128 + driver.stop_request.forced
    finally:
        driver.close()
    if driver.stop_request:  # first SIGINT/SIGTERM: stopped at an iteration boundary, checkpoint written
        log.warning("stopped by a signal; resume with: %s", resume)
        return driver.stop_request.exit_code
    log.info("done: %d iterations; metrics in %s", config.trainer.iterations, driver.metrics_path)
    if driver.metrics_path.exists():
        from rich.console import Console

        from services.run import report

        summary, picture = report.write(run_dir)
        Console(highlight=False).print(summary)
        print(f"report: {picture}   (crlhf report {run_dir} redraws it)")
    if driver.mirror is not None:  # run.storage: the final state, the exported model and the report
        driver.mirror.sync(final=True)
        log.info("run mirrored to %s", driver.mirror.uri)
    return 0 if last is not None else 1


if __name__ == "__main__":
    sys.exit(main())
