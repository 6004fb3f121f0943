"""Control-plane request metrics: a pure ASGI middleware feeding `RunTelemetry.observe_request` and adding
`Server-Timing: app;dur=<ms>` (time inside the app) to every response, to tell server time from network and
client time.

Pure ASGI rather than Starlette's `BaseHTTPMiddleware`: no extra task per request and no buffering of
streamed bodies, which matters at the ~100 requests/s the control plane is tested with.

The `route` label is the matched route's *template* (`/v1/constraints/{name}`), read from the scope
after routing, so a client requesting arbitrary paths cannot create arbitrary series: unmatched paths
share the label `unmatched`. A handler that raises is counted as 500 (the app's error handler outside
this middleware turns it into that response).
"""

from __future__ import annotations

import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.coordinator.telemetry import RunTelemetry

UNMATCHED = "unmatched"


def route_template(scope: Scope) -> str:
    """The template of the route that handled the request, or `unmatched`."""
    route: Any = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str) and path:
        return path
    return UNMATCHED


class RequestMetricsMiddleware:
    """`app.add_middleware(RequestMetricsMiddleware, telemetry=telemetry)`: counts and times every HTTP
    request by method, route template and status, and reports the time in a Server-Timing header."""

    def __init__(self, app: ASGIApp, telemetry: RunTelemetry) -> None:
        self.app = app
        self.telemetry = telemetry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                duration = f"app;dur={(time.perf_counter() - start) * 1e3:.2f}".encode()
                message = {**message, "headers": [*message.get("headers", []), (b"server-timing", duration)]}
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.telemetry.observe_request(scope["method"], route_template(scope), status, time.perf_counter() - start)
