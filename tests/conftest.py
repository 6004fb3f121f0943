import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # local test clusters on loopback only
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def ray_local():
    """One real local Ray cluster shared by the tests that need it."""
    import ray

    # address="local": always a fresh private cluster, never one found on the machine (a stale current-cluster
    # file, another run's head) — ray.init(num_cpus=...) would try to join that and fail
    ray.init(address="local", num_cpus=4, include_dashboard=False, runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1"}})
    yield ray
    ray.shutdown()
