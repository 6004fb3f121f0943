"""CPU per read request of the control plane, in isolation: a real uvicorn server over a real
CoordinatorState in this process, a keep-alive client in another process sending N GETs back to back;
the server's cost is this process's CPU time over the N requests.

    python bench/control_reads.py                 # 3000 requests per endpoint
    PYTHONPATH=OTHER_CHECKOUT python bench/control_reads.py   # the same against another version

bench/control_plane.py measures the whole mix under training load; this isolates reads, which it cannot
(its mix's CPU is dominated by /metrics and persisted PUTs).
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLIENT = r"""
import socket, sys
host, port, path, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
s = socket.create_connection((host, port))
request = f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
buf = b""
for _ in range(n):
    s.sendall(request)
    while True:
        head, sep, rest = buf.partition(b"\r\n\r\n")
        if sep:
            length = int([l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0].split(b":")[1])
            if len(rest) >= length:
                buf = rest[length:]
                break
        buf += s.recv(65536)
"""


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", type=int, default=3000)
    args = p.parse_args()
    root = Path(sys.path[0]).resolve().parent
    sys.path.insert(0, str(root))
    from services.control.server import start_control_plane

    try:
        from services.config.overrides import build_config
        from services.coordinator.state import CoordinatorState
    except ImportError:  # the layout before the coordinator package (for comparisons with older checkouts)
        from services.coordination import CoordinatorState  # type: ignore[no-redef]
        from services.overrides import build_config  # type: ignore[no-redef]
    config = build_config(["preset=smoke", "objective=mu_ppo", "control.port=0"])
    directory = Path(tempfile.mkdtemp())
    state = CoordinatorState(config, directory / "coordinator.pt")
    plane = start_control_plane(state, config.control, directory)
    host, port = plane.url.removeprefix("http://").split(":")
    print("| endpoint | requests | server CPU per request, ms | wall per request, ms |\n|---|---:|---:|---:|")
    for path in ("/v1/status", "/v1/constraints", "/v1/objective", "/v1/health"):
        subprocess.run([sys.executable, "-c", CLIENT, host, port, path, "200"], check=True)  # warm-up
        c0, t0 = cpu(), time.perf_counter()
        subprocess.run([sys.executable, "-c", CLIENT, host, port, path, str(args.n)], check=True)
        c1, t1 = cpu(), time.perf_counter()
        print(f"| GET {path} | {args.n} | {(c1 - c0) / args.n * 1e3:.3f} | {(t1 - t0) / args.n * 1e3:.3f} |", flush=True)
    plane.stop()


if __name__ == "__main__":
    main()
