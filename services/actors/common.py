"""Process set-up shared by every actor."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

class ActorStateLost(RuntimeError):
    """An actor holds older state than the call expects: Ray restarted it (a fresh process starts from the
    base model), so the driver must restore its state before the call can run (services/run/faults.py)."""


LOG_FILE_ENV = "CRLHF_LOG_FILE"  # the run's train.log, set in each actor's runtime_env by services/run/actors.py
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def quiet_process(torch_threads: int | None = None, redirect_output: bool = True) -> None:
    """Offline hub, no per-tensor progress bars, library logs to the run's train.log, a bounded torch pool."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    actor_logging(redirect_output)  # the coordinator keeps its stderr: its crlhf warnings reach the terminal
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(torch_threads or os.cpu_count() or 1)


def actor_logging(redirect_output: bool = False) -> None:
    """In an actor process: library logs to the run's train.log (when reachable), off the terminal.

    `redirect_output` also points the process's stdout/stderr file descriptors at train.log, for what bypasses
    Python logging (C++ warnings from torch and vLLM, progress bars); the driver reports what these actors
    have to say (errors come back to it as task errors)."""
    path = os.environ.get(LOG_FILE_ENV)
    os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "0")  # vLLM then logs through the root logger, not its own stderr handler
    logging.captureWarnings(True)
    if not path or not Path(path).parent.is_dir():
        return
    root = logging.getLogger()
    if any(getattr(h, "crlhf_run_log", False) for h in root.handlers):
        return
    for handler in list(root.handlers):
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            root.removeHandler(handler)
    if redirect_output:
        sys.stdout.flush()
        sys.stderr.flush()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
    handler = logging.FileHandler(path)
    handler.crlhf_run_log = True  # type: ignore[attr-defined]
    handler.setFormatter(logging.Formatter(FORMAT))
    root.addHandler(handler)
    root.setLevel(logging.INFO)
