"""Process set-up shared by every actor."""

from __future__ import annotations

import os


def quiet_process(torch_threads: int | None = None, redirect_output: bool = True) -> None:
    """Offline hub, no per-tensor progress bars, library logs to the run's train.log, a bounded torch pool."""
    from services.run.console import actor_logging

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    actor_logging(redirect_output)  # the coordinator keeps its stderr: its crlhf lines reach the terminal
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(torch_threads or os.cpu_count() or 1)
