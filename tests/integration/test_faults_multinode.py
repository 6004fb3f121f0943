"""Several Ray nodes on one machine (`ray start` head + workers): actor groups placed by custom resources
(`placement.*`), a smoke run that completes, and one whose rollout node is removed mid-run and continues on
a node added meanwhile. The runs are real `python -m services.launch` subprocesses joining the cluster."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.faults.harness import SMOKE, assert_same_numbers, records, run, start, stop_group, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]
PLACED = ["placement.rollout={node_rollout: 1}", "placement.learner={node_learner: 1}", "trainer.iterations=6", "checkpoint.every=2"]
RAY = str(Path(sys.executable).parent / "ray")


class LocalCluster:
    """Real `ray start --block` nodes on this machine, each in its own session, so a node is removed the way a
    machine is lost: SIGKILL to its whole process group (raylet, object store, its workers). A private
    RAY_TMPDIR keeps every other Ray user on the machine away from it, and it away from them.

    (`ray.cluster_utils.Cluster` was tried first: a driver in another process never connected to its GCS.)"""

    def __init__(self) -> None:
        self.env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_TMPDIR": tempfile.mkdtemp(prefix="rmn", dir="/tmp")}
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.address = f"127.0.0.1:{port}"
        self.nodes: list[subprocess.Popen] = []
        self._node("--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false")
        self.wait_for_resources(CPU=1)

    def _node(self, *args: str) -> subprocess.Popen:
        proc = subprocess.Popen([RAY, "start", "--block", "--node-ip-address=127.0.0.1", "--disable-usage-stats", *args],
                                env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.nodes.append(proc)
        return proc

    def add_node(self, **resources: float) -> subprocess.Popen:
        wanted = {name: self.total(name) + amount for name, amount in resources.items()}
        proc = self._node(f"--address={self.address}", "--num-cpus=2", f"--resources={json.dumps(resources)}")
        self.wait_for_resources(**wanted)
        return proc

    def total(self, name: str) -> float:
        """The cluster's total of a resource, from `ray status` ("0.0/2.0 node_rollout")."""
        status = subprocess.run([RAY, "status", f"--address={self.address}"], env=self.env, capture_output=True, text=True)
        found = re.search(rf"/([0-9.]+) {re.escape(name)}\b", status.stdout) if status.returncode == 0 else None
        return float(found.group(1)) if found else 0.0

    def wait_for_resources(self, timeout: float = 120, **totals: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self.total(name) >= total for name, total in totals.items()):
                return
            time.sleep(1)
        raise AssertionError(f"the cluster at {self.address} did not reach {totals} within {timeout} s")

    @staticmethod
    def remove_node(proc: subprocess.Popen) -> None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)

    def shutdown(self) -> None:
        for proc in reversed(self.nodes):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=60)


@pytest.fixture
def cluster():
    c = LocalCluster()
    try:
        yield c
    finally:
        c.shutdown()


def session_leaders(pid: int) -> set[int]:
    """The process groups of a process and of its ancestors (a worker's parent is its node's raylet)."""
    groups = set()
    while pid > 1:
        groups.add(os.getpgid(pid))
        pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    return groups


def nodes(run_dir):
    return json.loads((run_dir / "actors.json").read_text())


def test_groups_land_on_their_nodes_and_a_removed_rollout_node_is_survived(cluster, tmp_path):
    cluster.add_node(node_learner=1)
    rollout_nodes = [cluster.add_node(node_rollout=1), cluster.add_node(node_rollout=1)]  # one to lose, one spare
    address = [a for a in SMOKE if not a.startswith("run.ray_address=")] + [f"run.ray_address={cluster.address}"]
    code, out = run([*address, *PLACED, f"run.root={tmp_path}", "run.name=placed"])
    assert code == 0, out
    twin = records(tmp_path / "placed")
    assert [r["iteration"] for r in twin] == list(range(6))

    run_dir = tmp_path / "moved"
    proc = start([*address, *PLACED, f"run.root={tmp_path}", "run.name=moved"], log=tmp_path / "moved.log")
    try:
        wait_for(lambda: len(records(run_dir)) >= 1, what="the first metrics line", proc=proc)
        before = nodes(run_dir)["rollout/0"]
        # The node holding the rollout actor goes away mid-run: its processes (raylet, object store) and the
        # actor's worker, which its raylet started in a session of its own, all SIGKILLed.
        (lost,) = [node for node in rollout_nodes if node.pid in session_leaders(before)]
        cluster.remove_node(lost)
        os.kill(before, signal.SIGKILL)
        proc.wait(timeout=600)
    finally:
        stop_group(proc)
    out = (tmp_path / "moved.log").read_text()
    assert proc.returncode == 0, out
    assert nodes(run_dir)["rollout/0"] != before  # restarted, on the spare node
    assert_same_numbers(records(run_dir), twin)
