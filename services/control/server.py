"""Serve the control plane with uvicorn in a background thread of the coordinator process.

The socket is bound here, synchronously, so the caller knows the port (port 0 = a free one) and a busy port
fails the start with a clear error instead of inside uvicorn's thread. `control.json` in the run directory
says where the server listens; the CLI reads it.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import tempfile
import threading
import time
from pathlib import Path

import uvicorn
from fastapi import FastAPI

log = logging.getLogger("crlhf.control")

ADDRESS_FILE = "control.json"
_ANY_HOST = {"", "0.0.0.0", "::"}


class ControlPlaneError(RuntimeError):
    """The control plane could not start (e.g. its port is taken)."""


def bind(host: str, port: int, wait_seconds: float = 10.0) -> socket.socket:
    """A listening-ready TCP socket on host:port. A busy fixed port is retried for `wait_seconds` (the previous
    run's coordinator may still be shutting down), then reported."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    deadline = time.monotonic() + wait_seconds
    while True:
        # proto=IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on accepted sockets whose proto says TCP;
        # without it every response waits ~40 ms (Nagle + delayed ACK). Linux also inherits it from the listener.
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.bind((host, port))
            sock.set_inheritable(True)
            return sock
        except OSError as err:
            sock.close()
            if err.errno == errno.EADDRINUSE and port != 0 and time.monotonic() < deadline:
                time.sleep(0.25)
                continue
            hint = " (set control.port=0 for a free port, or control.enabled=false)" if err.errno == errno.EADDRINUSE else ""
            raise ControlPlaneError(f"control plane: cannot listen on {host}:{port}: {err.strerror}{hint}") from None


def url_for(host: str, port: int, advertise_host: str | None = None) -> str:
    shown = advertise_host or ("127.0.0.1" if host in _ANY_HOST else host)
    return f"http://[{shown}]:{port}" if ":" in shown else f"http://{shown}:{port}"


class ControlServer:
    """uvicorn on a pre-bound socket, in a daemon thread. Access logs are off: they would cost latency and
    fill the driver's log at 100 requests/s (they never contain headers, so never the token)."""

    def __init__(
        self, app: FastAPI, host: str = "127.0.0.1", port: int = 0, advertise_host: str | None = None, nice: int = 0
    ) -> None:
        self.nice = nice
        self.sock = bind(host, port)
        self.port = self.sock.getsockname()[1]
        self.url = url_for(host, self.port, advertise_host)
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", timeout_keep_alive=30)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._run, name="crlhf-control-plane", daemon=True)
        self._error: BaseException | None = None

    def _run(self) -> None:
        if self.nice > 0 and hasattr(os, "setpriority"):
            # Linux nice values are per thread and inherited by threads created later (FastAPI's worker pool).
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.nice)
        try:
            self.server.run(sockets=[self.sock])
        except BaseException as err:  # surfaced by start()
            self._error = err

    def start(self, timeout: float = 15.0) -> str:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if self._error is not None or not self.thread.is_alive():
                raise ControlPlaneError(f"control plane failed to start: {self._error!r}")
            if time.monotonic() > deadline:
                raise ControlPlaneError(f"control plane did not start within {timeout:.0f} s")
            time.sleep(0.01)
        return self.url

    def stop(self, timeout: float = 5.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        self.sock.close()


def write_address(run_dir: Path, url: str) -> Path:
    """<run_dir>/control.json = {"url": …, "pid": …, "started": …}, replaced atomically."""
    run_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=run_dir, prefix=ADDRESS_FILE + ".", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump({"url": url, "pid": os.getpid(), "started": time.time()}, f)
    os.chmod(tmp, 0o644)
    os.replace(tmp, run_dir / ADDRESS_FILE)
    return run_dir / ADDRESS_FILE


class ControlPlane:
    """A started control plane: its URL, the token's file, and the server to stop."""

    def __init__(self, server: ControlServer, token_source: str, token_path: Path | None) -> None:
        self.server, self.token_source, self.token_path = server, token_source, token_path

    @property
    def url(self) -> str:
        return self.server.url

    def stop(self) -> None:
        self.server.stop()


def start_control_plane(state, control, run_dir: Path, advertise_host: str | None = None) -> ControlPlane:
    """Resolve the token, serve `create_app(state, token)` on control.host:port, write control.json and
    control.token into the run directory, and log the address (never the token)."""
    from services.control.app import create_app
    from services.control.auth import resolve_token, write_token_file

    token, source = resolve_token(control.token)
    server = ControlServer(create_app(state, token), control.host, control.port, advertise_host, control.nice)
    token_path = write_token_file(run_dir, token)
    server.start()
    write_address(run_dir, server.url)
    log.info(
        "control plane listening on %s (docs %s/docs); token from %s, saved to %s",
        server.url, server.url, source, token_path,
    )
    return ControlPlane(server, source, token_path)
