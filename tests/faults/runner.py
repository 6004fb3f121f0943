"""`python -m tests.faults.runner KEY=VALUE ...`: services.launch with the test reward kinds registered
(tests/faults/fault_rewards.py) in this process and in every Ray worker, on a fresh local Ray cluster."""

from __future__ import annotations

import os
import sys

import ray

from services.launch import main
from tests.faults.fault_rewards import register

if __name__ == "__main__":
    register()
    ray.init(address="local", num_cpus=4, include_dashboard=False, logging_level="WARNING", runtime_env={
        "env_vars": {"HF_HUB_OFFLINE": "1"}, "worker_process_setup_hook": "tests.faults.fault_rewards.register"})
    code = main(sys.argv[1:])
    sys.stdout.flush()
    os._exit(code)  # skip Ray's atexit shutdown wait: the exit code is what the test reads
