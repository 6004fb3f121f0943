"""The built-in live page (`/live/`) and the read-only history it charts (`GET /v1/history`).

For people with no Grafana at hand: the page polls the control plane's own JSON endpoints (`/v1/status`,
`/v1/constraints`, `/v1/audit`, `/v1/history`) and charts each reward against its threshold, the
violations and the multipliers/weights over iterations, and changes a threshold through
`PUT /v1/constraints/{name}` with the bearer token the user pastes (kept in the tab's sessionStorage,
sent only in the Authorization header, never in a URL).

Everything the page needs ships inside the package (`services/control/live/`, uPlot vendored under
`vendor/uplot/` with its MIT licence): no CDN, so it works on an air-gapped cluster. Assets are read once
and served from memory from a fixed list; no path from the request ever reaches the file system.

The history comes from `RunTelemetry.history`, which keeps a compact copy of every record the coordinator
observed, so this module needs nothing from `CoordinatorState`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from services.control.schemas import ErrorBody
from services.coordinator.telemetry import RunTelemetry

LIVE_DIR = Path(__file__).with_name("live")
# Served path (below /live/) -> (file below LIVE_DIR, media type). Nothing else is served.
ASSETS: dict[str, tuple[str, str]] = {
    "": ("index.html", "text/html; charset=utf-8"),
    "app.js": ("app.js", "text/javascript; charset=utf-8"),
    "style.css": ("style.css", "text/css; charset=utf-8"),
    "vendor/uplot/uPlot.iife.min.js": ("vendor/uplot/uPlot.iife.min.js", "text/javascript; charset=utf-8"),
    "vendor/uplot/uPlot.min.css": ("vendor/uplot/uPlot.min.css", "text/css; charset=utf-8"),
    "vendor/uplot/LICENSE": ("vendor/uplot/LICENSE", "text/plain; charset=utf-8"),
}
# The page runs only its own files and talks only to its own origin. uPlot sizes its elements through the
# CSSOM (element.style.x = ...), which style-src 'self' allows.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
MAX_HISTORY = 10_000


class History(BaseModel):
    """Compacted per-iteration records, oldest first."""

    model_config = ConfigDict(extra="ignore")

    run: str = Field(description="The run's label (as on every Prometheus series).")
    rewards: list[str] = Field(description="The run's reward names, in configuration order.")
    records: list[dict[str, float | int | None]] = Field(
        description="One per iteration: `iteration`, and `reward/<r>`, `threshold/<r>`, `violation/<r>`, "
        "`multiplier/<r>`, `weight/<r>`, `kl`, `kl_coef`, `tokens`, `tokens_per_second`, `eval/score`, `time/<phase>`, "
        "`nm/...` where the run records them (null = not a finite number)."
    )
    next_since: int = Field(description="Pass as `since` to get only newer records.")


def _load_assets() -> dict[str, tuple[bytes, str]]:
    missing = [f for f, _ in ASSETS.values() if not (LIVE_DIR / f).is_file()]
    if missing:  # a broken install (package data not shipped) fails loudly at start, not at first view
        raise RuntimeError(f"live page assets missing from {LIVE_DIR}: {', '.join(missing)}")
    return {path: ((LIVE_DIR / f).read_bytes(), media) for path, (f, media) in ASSETS.items()}


def live_router(telemetry: RunTelemetry | Callable[[], RunTelemetry]) -> APIRouter:
    """`GET /v1/history` and the live page under `/live/`. Include with `app.include_router(live_router(t))`.

    `telemetry` may be a callable returning the current `RunTelemetry`, for owners that replace it.
    """

    def current() -> RunTelemetry:
        return telemetry() if callable(telemetry) else telemetry

    assets = _load_assets()
    r = APIRouter()

    @r.get(
        "/v1/history", tags=["read"], response_model=History, summary="Recent per-iteration records (for charts).",
        # The app's validation handler answers {"detail": "<message>"}, not FastAPI's default list.
        responses={422: {"model": ErrorBody, "description": "Invalid value; the detail names it."}},
    )
    def history(
        since: int = Query(0, ge=0, le=2**62, description="First iteration to return."),
        limit: int = Query(2000, ge=1, le=MAX_HISTORY, description="At most this many records (the latest ones)."),
    ) -> dict[str, Any]:
        t = current()
        records = t.history(since, limit)
        nxt = int(records[-1]["iteration"]) + 1 if records else since  # type: ignore[arg-type]
        return {"run": t.run, "rewards": t.reward_names, "records": records, "next_since": nxt}

    @r.get("/live", include_in_schema=False)
    def live_redirect(request: Request) -> RedirectResponse:
        # Relative: keeps working behind a reverse proxy that mounts the control plane under a prefix.
        query = request.url.query
        return RedirectResponse("live/" + (f"?{query}" if query else ""), status_code=307)

    @r.get("/live/{path:path}", include_in_schema=False)
    def live_asset(path: str) -> Response:
        found = assets.get(path)
        if found is None:
            raise HTTPException(404, f"no such file of the live page: {path!r}")
        body, media = found
        return Response(body, media_type=media, headers=SECURITY_HEADERS)

    return r
