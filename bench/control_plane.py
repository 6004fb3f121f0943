"""Control-plane latency under load while a run trains, and the iteration-time cost of serving that load.

    python bench/control_plane.py                      # smoke preset, mu_ppo, 100 req/s, 8 loaded + 8 unloaded iterations
    python bench/control_plane.py --pairs 12 --rate 200

One real run (Ray actors, the Coordinator's uvicorn server) trains; a load generator in a separate process
(loopback only, open loop: requests are sent on a fixed schedule whatever the latency) hits the control
plane at `--rate` requests/s during every other iteration, in ABBA order so drift cancels. Responses have a
fixed length (min_new_tokens = max_new_tokens) so every iteration does the same work. Reported side by side:

- latency p50/p95/p99/max per request kind while training, and for the same load on an idle run
  (send → full response on a keep-alive connection; time queued in the generator is reported as lateness);
- iteration wall time with and without load (medians, and the mean of paired differences);
- CPU time the coordinator process spends serving (loaded minus unloaded iterations), and the generator's.

The default client writes pre-encoded HTTP/1.1 on asyncio streams: httpx (`--client httpx`) costs several
milliseconds of CPU per request here, which on a 2-core machine would compete with the run being measured.

The mix is read-heavy like a dashboard plus an operator: status, constraints, objective, audit, health,
/metrics, and 5 % threshold PUTs that set the current value (audited and persisted, training unchanged).
Bounded: at most `--max-requests` requests and `--max-seconds` of load in total.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

MIX = [  # (weight, method, path, body)
    (40, "GET", "/v1/status", None),
    (25, "GET", "/v1/constraints", None),
    (10, "GET", "/v1/objective", None),
    (5, "GET", "/v1/audit?limit=20", None),
    (5, "GET", "/v1/health", None),
    (10, "GET", "/metrics", None),
    (5, "PUT", "/v1/constraints/meteor", {"threshold": 0.23}),
]


def _schedule(n: int) -> list[int]:
    """Deterministic interleaving of MIX by weight (smooth weighted round robin)."""
    current = [0] * len(MIX)
    total = sum(w for w, *_ in MIX)
    out = []
    for _ in range(n):
        for i, (w, *_rest) in enumerate(MIX):
            current[i] += w
        best = max(range(len(MIX)), key=lambda i: current[i])
        current[best] -= total
        out.append(best)
    return out


PHASES = {1: "idle", 2: "train"}  # shared phase value: 0 = no load


def _encoded(token: str, host: str) -> list[bytes]:
    """MIX as ready-to-send HTTP/1.1 keep-alive requests."""
    out = []
    for _, method, path, body in MIX:
        data = b"" if body is None else json.dumps(body).encode()
        head = (f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
                f"X-Crlhf-User: bench\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n")
        out.append(head.encode() + data)
    return out


def _header(head: bytes, name: bytes) -> bytes | None:
    start = head.lower().find(b"\r\n" + name + b":")
    if start < 0:
        return None
    start += len(name) + 3
    return head[start : head.find(b"\r\n", start)].strip()


def generator(url: str, token: str, rate: float, phase, stop, conn, max_requests: int, max_seconds: float,
              client: str, workers: int, nice: int = 0) -> None:
    """Process body: while `phase` is non-zero, send `rate` requests/s on a fixed schedule (open loop) over
    `workers` keep-alive connections; send the records [(phase, kind, latency s, status, lateness s, server s)]
    back through `conn` when `stop` is set.

    client="raw" writes pre-encoded HTTP/1.1 on asyncio streams (~0.1 ms CPU per request); "httpx" uses
    httpx.AsyncClient (several times the CPU, which on a 2-core machine competes with the run it measures)."""
    from urllib.parse import urlsplit

    if nice:
        os.nice(nice)
    parts = urlsplit(url)
    requests = _encoded(token, parts.netloc)
    kinds = [f"{m} {p.split('?')[0]}" for _, m, p, _ in MIX]
    order = _schedule(1000)

    async def run() -> list[tuple[str, str, float, int, float, float]]:
        records: list[tuple[str, str, float, int, float, float]] = []
        queue: asyncio.Queue = asyncio.Queue()

        async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
            writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return reader, writer

        async def raw_worker() -> None:
            reader, writer = await connect()
            while (item := await queue.get()) is not None:
                index, name, due = item
                for attempt in range(2):  # the server closes keep-alive connections idle > 30 s: reconnect once
                    start = time.perf_counter()
                    try:
                        writer.write(requests[index])
                        head = await reader.readuntil(b"\r\n\r\n")
                        break
                    except (asyncio.IncompleteReadError, ConnectionError):
                        writer.close()
                        reader, writer = await connect()
                else:
                    records.append((name, kinds[index], time.perf_counter() - start, 0, start - due, float("nan")))
                    continue
                await reader.readexactly(int(_header(head, b"content-length") or 0))
                timing = _header(head, b"server-timing") or b""
                server = float(timing.split(b"dur=")[1]) / 1e3 if b"dur=" in timing else float("nan")
                records.append((name, kinds[index], time.perf_counter() - start, int(head[9:12]), start - due, server))
            writer.close()

        async def httpx_worker() -> None:
            import httpx

            async with httpx.AsyncClient(base_url=url, timeout=30) as http:
                while (item := await queue.get()) is not None:
                    index, name, due = item
                    _, method, path, body = MIX[index]
                    start = time.perf_counter()
                    r = await http.request(method, path, json=body, headers={"Authorization": f"Bearer {token}"})
                    timing = r.headers.get("server-timing", "")
                    server = float(timing.split("dur=")[1]) / 1e3 if "dur=" in timing else float("nan")
                    records.append((name, kinds[index], time.perf_counter() - start, r.status_code, start - due, server))

        tasks = [asyncio.create_task(raw_worker() if client == "raw" else httpx_worker()) for _ in range(workers)]
        sent, loaded_seconds = 0, 0.0
        while not stop.is_set() and sent < max_requests and loaded_seconds < max_seconds:
            if phase.value == 0:
                await asyncio.sleep(0.005)
                continue
            t0, i = time.perf_counter(), 0
            while phase.value and not stop.is_set() and sent < max_requests:
                due = t0 + i / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                queue.put_nowait((order[sent % len(order)], PHASES.get(phase.value, "?"), due))
                sent, i = sent + 1, i + 1
            loaded_seconds += time.perf_counter() - t0
        for _ in tasks:
            queue.put_nowait(None)
        await asyncio.gather(*tasks)
        return records

    conn.send(asyncio.run(run()))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def latency_table(records: list[tuple], phase: str) -> list[str]:
    rows = [r for r in records if r[0] == phase]
    if not rows:
        return [f"(no requests in phase {phase})"]
    out = ["| requests | kind | p50 ms | p95 ms | p99 ms | max ms | non-2xx |", "|---:|---|---:|---:|---:|---:|---:|"]
    kinds = sorted({r[1] for r in rows})
    for kind in ["all", *kinds]:
        sel = rows if kind == "all" else [r for r in rows if r[1] == kind]
        lat = [r[2] * 1e3 for r in sel]
        bad = sum(1 for r in sel if not 200 <= r[3] < 300)
        out.append(f"| {len(sel)} | {kind} | {percentile(lat, 50):.2f} | {percentile(lat, 95):.2f} | "
                   f"{percentile(lat, 99):.2f} | {max(lat):.2f} | {bad} |")
    late = [r[4] * 1e3 for r in rows]
    server = [r[5] * 1e3 for r in rows if r[5] == r[5]]
    out.append("")
    out.append(f"time inside the app (Server-Timing): p50 {percentile(server, 50):.2f} ms, p99 {percentile(server, 99):.2f} ms; "
               f"send lateness vs schedule (generator side): p50 {percentile(late, 50):.2f} ms, p99 {percentile(late, 99):.2f} ms")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", type=int, default=8, help="loaded/unloaded iteration pairs (after 2 warm-up iterations)")
    p.add_argument("--rate", type=float, default=100.0, help="requests per second while loaded")
    p.add_argument("--idle-seconds", type=float, default=10.0, help="seconds of the same load on an idle run")
    p.add_argument("--client", choices=["raw", "httpx"], default="raw", help="load generator's HTTP client")
    p.add_argument("--workers", type=int, default=8, help="keep-alive connections of the load generator")
    p.add_argument("--client-nice", type=int, default=0,
                   help="nice value of the load generator (it stands in for remote clients; > 0 keeps it off the run's cores)")
    p.add_argument("--max-requests", type=int, default=100_000)
    p.add_argument("--max-seconds", type=float, default=900.0)
    p.add_argument("overrides", nargs="*", help="extra key=value config overrides")
    args = p.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import ray

    from services.data.dialogues import load_examples
    from services.driver import Driver
    from services.config.overrides import build_config

    config = build_config(["preset=smoke", "objective=mu_ppo", "control.port=0", "evaluation.every=0", "checkpoint.every=0",
                           "rollout.sampling.min_new_tokens=8", "rollout.sampling.max_new_tokens=8",
                           f"trainer.iterations={2 + 2 * args.pairs}", *args.overrides])
    # A Ray instance of its own, like the other benches: joining whatever cluster runs on the machine could
    # leave the run's actors waiting for that cluster's CPUs.
    ray.init(num_cpus=4, include_dashboard=False, runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1"}})
    run_dir = Path(tempfile.mkdtemp(prefix="bench-control-"))
    driver = Driver(config, run_dir, load_examples(config.data, "train"))
    ctx = mp.get_context("spawn")
    phase, stop = ctx.Value("i", 0), ctx.Event()
    parent, child = ctx.Pipe()
    try:
        url = ray.get(driver.coordinator.address.remote())
        token = (run_dir / "control.token").read_text().strip()
        gen = ctx.Process(target=generator, args=(url, token, args.rate, phase, stop, child, args.max_requests,
                                                  args.max_seconds, args.client, args.workers, args.client_nice))
        gen.start()
        server_pid = ray.get(driver.coordinator.pid.remote())
        for k in range(2):  # warm-up: lazy allocations, first weight sync
            driver.iteration(k)
        phase.value = 1
        time.sleep(args.idle_seconds)
        phase.value = 0
        time.sleep(0.5)
        walls: dict[bool, list[float]] = {True: [], False: []}
        cpu = {True: {"server": 0.0, "client": 0.0}, False: {"server": 0.0, "client": 0.0}}
        pairs: list[tuple[float, float]] = []
        k = 2
        for i in range(args.pairs):
            order = (False, True) if i % 2 == 0 else (True, False)  # ABBA
            pair = {}
            for loaded in order:
                phase.value = 2 if loaded else 0
                time.sleep(0.2)  # the load (or its absence) is steady before the iteration starts
                s0, c0, t0 = cpu_seconds(server_pid), cpu_seconds(gen.pid), time.perf_counter()
                driver.iteration(k)
                pair[loaded] = time.perf_counter() - t0
                cpu[loaded]["server"] += cpu_seconds(server_pid) - s0
                cpu[loaded]["client"] += cpu_seconds(gen.pid) - c0
                walls[loaded].append(pair[loaded])
                k += 1
            pairs.append((pair[False], pair[True]))
            print(f"pair {i}: unloaded {pair[False]:.3f}s loaded {pair[True]:.3f}s", flush=True)
        phase.value = 0
        stop.set()
        if not parent.poll(120):
            raise SystemExit("the load generator did not report back")
        records = parent.recv()
        gen.join(30)
    finally:
        stop.set()
        driver.close()

    cores = os.cpu_count() or 1
    train_requests = sum(1 for r in records if r[0] == "train")
    extra_server = cpu[True]["server"] - cpu[False]["server"]
    loaded_time = sum(walls[True])
    diffs = [b - a for a, b in pairs]
    base = statistics.median(walls[False])
    mean_diff, sd = statistics.mean(diffs), statistics.stdev(diffs) if len(diffs) > 1 else 0.0
    half = 2.0 * sd / len(diffs) ** 0.5
    lines = [
        f"## Control plane ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, mu_ppo, {args.rate:g} req/s, "
        f"overrides: {' '.join(args.overrides) or '-'}, client nice {args.client_nice})",
        "",
        "Latency while the run trains (loaded iterations):",
        "",
        *latency_table(records, "train"),
        "",
        f"Latency for the same load on an idle run ({args.idle_seconds:g} s):",
        "",
        *latency_table(records, "idle"),
        "",
        "Iteration wall time, same run, ABBA-interleaved:",
        "",
        "| | iterations | median s | mean s |",
        "|---|---:|---:|---:|",
        f"| no load | {len(walls[False])} | {base:.3f} | {statistics.mean(walls[False]):.3f} |",
        f"| {args.rate:g} req/s | {len(walls[True])} | {statistics.median(walls[True]):.3f} | {statistics.mean(walls[True]):.3f} |",
        "",
        f"overhead: median {100 * (statistics.median(walls[True]) / base - 1):+.1f} %, paired mean "
        f"{100 * mean_diff / base:+.1f} % ± {100 * half / base:.1f} % (±2 s.e.)",
        "",
        "CPU spent serving (coordinator process, loaded minus unloaded iterations) and by the load generator:",
        "",
        f"- server: {1e3 * extra_server / max(train_requests, 1):.2f} ms CPU per request, "
        f"{100 * extra_server / (loaded_time * cores):.2f} % of the machine's {cores} cores while loaded",
        f"- load generator ({args.client} client, same machine, stands in for remote clients): "
        f"{1e3 * cpu[True]['client'] / max(train_requests, 1):.2f} ms CPU per request, "
        f"{100 * cpu[True]['client'] / (loaded_time * cores):.2f} % of the machine",
        f"- load average at the end: {os.getloadavg()[0]:.1f} (other work on the machine inflates every number above)",
    ]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
