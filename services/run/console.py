"""What reaches the terminal, and what only the run's train.log gets.

The terminal shows crlhf's own start-up lines, the progress bar with the live numbers, and the summary;
everything else — library INFO and warnings (vLLM, Ray, absl, transformers, Python `warnings`) and every
per-iteration line — goes to `<run dir>/train.log`. Errors of any origin still reach the terminal.

Actors write their library logs to the same train.log when the driver tells them where it is
(`CRLHF_LOG_FILE` in each actor's runtime_env, so two runs on one Ray connection keep their logs apart;
read by `services.actors.common.actor_logging`). On a multi-node cluster without a shared filesystem the
file is missing on other nodes and their logs stay in Ray's per-worker log files.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path

from services.actors.common import FORMAT



ITERATION_LOGGER = "crlhf.iteration"  # one line per iteration: train.log only (the progress bar shows them live)


class ConsoleFilter(logging.Filter):
    """crlhf's own INFO and above (not the per-iteration lines), crlhf modules' warnings, others' errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        name = record.name
        if name == ITERATION_LOGGER:
            return False
        if name == "crlhf" or name.startswith("crlhf."):
            return record.levelno >= logging.INFO
        if name.startswith("services."):
            return record.levelno >= logging.WARNING
        return record.levelno >= logging.ERROR


def console_logging() -> None:
    """The driver's terminal handler (idempotent)."""
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    if not any(isinstance(h, logging.StreamHandler) and getattr(h, "crlhf_console", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.crlhf_console = True  # type: ignore[attr-defined]
        handler.setFormatter(logging.Formatter(FORMAT, "%H:%M:%S"))
        handler.addFilter(ConsoleFilter())
        root.addHandler(handler)
    logging.captureWarnings(True)  # warnings.warn → the "py.warnings" logger → train.log only


def route_ray_logs() -> None:
    """Ray's driver-side logger writes to stderr through its own handler and does not propagate (set up when
    `ray` is imported); send its records through the root logger instead, so its INFO and warnings (the
    token-authentication notice of every new local cluster, for one) reach train.log and only its errors the
    terminal. Call after `import ray` and before `ray.init`."""
    ray_logger = logging.getLogger("ray")
    for handler in list(ray_logger.handlers):
        if type(handler).__module__.startswith("ray."):
            ray_logger.removeHandler(handler)
    ray_logger.propagate = True


def run_log(run_dir: Path) -> Callable[[], None]:
    """Send every log record of this process to `<run dir>/train.log`; returns the undo (so two runs in one
    process never write into each other's log)."""
    handler = logging.FileHandler(run_dir / "train.log")
    handler.setFormatter(logging.Formatter(FORMAT))
    root = logging.getLogger()
    root.addHandler(handler)

    def undo() -> None:
        root.removeHandler(handler)
        handler.close()

    return undo
