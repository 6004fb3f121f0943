"""Which Ray cluster a launch joins, decided before `ray.init` so that a dead address never hangs it.

Order: `run.ray_address`, else `RAY_ADDRESS` (set by `ray job submit`), else what `ray.init(address="auto")`
would find in Ray's current-cluster file (written by `ray start`, left behind when a head node is killed
rather than stopped) — else a new local cluster. Unlike `address="auto"`, a GCS process found running on
this machine is not joined: it is usually another run's private local cluster, which goes down (taking this
run's actors with it) when that run ends. Every address is
probed with a short TCP connect first: an explicit one that does not answer is an error naming it and
where it came from; a discovered one that does not answer is reported as stale and a local cluster is
started instead.
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass

PROBE_SECONDS = 2.0


@dataclass(frozen=True)
class ClusterChoice:
    address: str | None  # None: start a local cluster
    source: str  # where the address came from, for messages
    warning: str | None = None  # a stale discovered address that was skipped


class ClusterUnreachable(RuntimeError):
    """An address the user asked for does not answer."""


def reachable(address: str, timeout: float = PROBE_SECONDS) -> bool:
    """Whether host:port accepts a TCP connection (addresses with a scheme, e.g. ray://, are not probed)."""
    match = re.fullmatch(r"\[?([^\]]+?)\]?:(\d+)", address)
    if match is None:
        return True
    try:
        with socket.create_connection((match.group(1), int(match.group(2))), timeout=timeout):
            return True
    except OSError:
        return False


def _discovered() -> tuple[str | None, str]:
    # Ray's own discovery (what address="auto" uses), without connecting: a private API, pinned with Ray.
    from ray._common.utils import get_ray_address_file
    from ray._private import services

    from_file = services.find_bootstrap_address(None)
    if from_file:
        return from_file, f"Ray's current-cluster file ({get_ray_address_file(None)})"
    return None, ""


def choose(configured: str | None) -> ClusterChoice:
    explicit = configured or os.environ.get("RAY_ADDRESS") or None
    if explicit == "local":
        return ClusterChoice(None, "run.ray_address=local")
    if explicit:
        source = "run.ray_address" if configured else "RAY_ADDRESS"
        if not reachable(explicit):
            raise ClusterUnreachable(
                f"cannot reach the Ray cluster at {explicit} (from {source}) within {PROBE_SECONDS:g} s: is its head node "
                "running? (`ray status --address ...`); unset it to start a local cluster"
            )
        return ClusterChoice(explicit, source)
    address, source = _discovered()
    if address is None:
        return ClusterChoice(None, "no running cluster found")
    if not reachable(address):
        return ClusterChoice(None, source, warning=(
            f"the Ray cluster at {address} (from {source}) does not answer: stale (a head node killed rather than "
            "stopped?); starting a local cluster instead. `ray stop --force` removes the stale file"))
    return ClusterChoice(address, source)
