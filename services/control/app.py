"""The FastAPI control plane over a `CoordinatorState` (docs: docs/API.md, live at /docs).

Reads are open; changes need the bearer token. Every change is queued in the state under its lock and
applies from the next iteration boundary, which the response names (`applies_from`). Errors are
`{"detail": "..."}` naming the problem; a stack trace never reaches a client.

Reads are `async def` and run on the event loop: they return the bytes of the snapshot the coordinator
publishes once per change (`services/coordinator/views.py`), with an ETag for conditional polling, so a read
costs neither the lock nor a serialisation; skipping the thread-pool hand-off keeps their latency low on a
CPU-starved training node.
Changes are plain `def`, run in FastAPI's thread pool, because they wait for their write to reach the disk.
Every request is counted and timed (`services/control/metrics.py`), and every response carries
`Server-Timing: app;dur=<ms>`, to tell server time from network and client time.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from fastapi import APIRouter, Body, Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.control import schemas
from services.control.auth import bearer_guard
from services.control.live_router import live_router
from services.control.metrics import RequestMetricsMiddleware
from services.config.names import unknown_name_message
from services.coordinator import changes, views
from services.coordinator.errors import ChangeError, NotFoundError
from services.coordinator.state import CoordinatorState
from services.coordinator.telemetry import CONTENT_TYPE_LATEST

log = logging.getLogger("crlhf.control")

USER_HEADER = "x-crlhf-user"
_SAFE_USER = re.compile(r"[^A-Za-z0-9_.@+-]")
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": schemas.ErrorBody, "description": "The body could not be decoded (not UTF-8)."},
    401: {"model": schemas.ErrorBody, "description": "Missing, malformed or wrong bearer token."},
    404: {"model": schemas.ErrorBody, "description": "Unknown reward or resource."},
    409: {"model": schemas.ErrorBody, "description": "Does not apply to this run in its current state."},
    422: {"model": schemas.ErrorBody, "description": "Invalid value or body; the detail names it."},
}


def who(request: Request) -> str:
    """The audit log's `who`: the X-Crlhf-User header (sanitised) at the client's address."""
    user = _SAFE_USER.sub("", request.headers.get(USER_HEADER, ""))[:64] or "api"
    host = request.client.host if request.client else "unknown"
    return f"{user}@{host}"


def _validation_detail(err: RequestValidationError) -> str:
    parts = []
    for e in err.errors():
        raw = list(e.get("loc", ()))
        loc = [str(p) for p in (raw[1:] if raw[:1] == ["body"] else raw)]
        msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        if e.get("type") == "json_invalid":
            parts.append("request body is not valid JSON")
            continue
        if e.get("type") == "extra_forbidden":
            msg = "unknown field"
        parts.append(f"{'.'.join(loc)}: {msg}" if loc else f"request body: {msg}" if raw[:1] == ["body"] else msg)
    return "; ".join(parts) or "invalid request"


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ChangeError)
    async def change_error(_: Request, err: ChangeError) -> JSONResponse:
        return JSONResponse({"detail": str(err)}, status_code=err.status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, err: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _validation_detail(err)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, err: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"detail": str(err.detail)}, status_code=err.status_code, headers=getattr(err, "headers", None))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, err: Exception) -> JSONResponse:
        log.error("control plane: %s %s failed: %s: %s", request.method, request.url.path, type(err).__name__, err)
        return JSONResponse({"detail": f"internal error ({type(err).__name__}); see the coordinator log"}, status_code=500)


def _json(body: bytes, etag: str, request: Request) -> Response:
    """A pre-serialised view; 304 when the client already holds this revision (If-None-Match)."""
    headers = {"etag": etag, "cache-control": "no-cache"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)


def _view(snapshot: views.Published, key: str, request: Request) -> Response:
    body = snapshot.bodies[key]
    if isinstance(body, ChangeError):
        raise body
    return _json(body, snapshot.etag, request)


def _reads(state: CoordinatorState) -> APIRouter:
    """Reads serve the snapshot `views.published` renders once per state revision (no lock, no validation
    per request); the response models document the bodies, which the views produce in exactly that shape."""
    r = APIRouter(prefix="/v1", tags=["read"])

    @r.get("/health", response_model=schemas.Health)
    async def health(request: Request) -> Response:
        return _view(views.published(state), "health", request)

    @r.get("/status", response_model=schemas.Status)
    async def status() -> Response:
        # not conditional: uptime_seconds moves with the clock
        return Response(views.published(state).status_body(), media_type="application/json")

    @r.get("/constraints", response_model=list[schemas.Constraint])
    async def constraints(request: Request) -> Response:
        return _view(views.published(state), "constraints", request)

    @r.get("/constraints/{name}", response_model=schemas.Constraint, responses={404: ERRORS[404], 422: ERRORS[422]})
    async def constraint(request: Request, name: str = Path(description="Reward name.")) -> Response:
        snapshot = views.published(state)
        body = snapshot.constraint_bodies.get(name)
        if body is None:
            raise NotFoundError(unknown_name_message("reward", name, list(snapshot.constraint_bodies)))
        return _json(body, snapshot.etag, request)

    @r.get("/objective", response_model=schemas.ObjectiveView)
    async def objective(request: Request) -> Response:
        return _view(views.published(state), "objective", request)

    @r.get("/nelder-mead", response_model=schemas.NelderMeadView, responses={404: ERRORS[404], 409: ERRORS[409]})
    async def nelder_mead(request: Request) -> Response:
        return _view(views.published(state), "nelder_mead", request)

    @r.get("/audit", response_model=list[schemas.AuditEntry], responses={422: ERRORS[422]})
    async def audit(
        since: int = Query(0, ge=0, le=2**62, description="First sequence number to return."),
        limit: int | None = Query(None, ge=0, le=100_000, description="At most this many (the latest ones)."),
    ) -> Response:
        with state.lock:
            entries = views.audit(state, since, limit)
        return Response(json.dumps(entries, separators=(",", ":")), media_type="application/json")

    return r


def _writes(state: CoordinatorState, token: str) -> APIRouter:
    r = APIRouter(prefix="/v1", tags=["change"], dependencies=[Depends(bearer_guard(token))], responses={401: ERRORS[401]})
    errors = {code: ERRORS[code] for code in (400, 404, 409, 422)}

    @r.put("/constraints/{name}", status_code=202, response_model=schemas.ConstraintChange, responses=errors)
    def update_constraint(request: Request, body: schemas.ConstraintUpdate, name: str = Path(description="Reward name.")) -> dict[str, Any]:
        done = changes.update_constraint(state, name, body.threshold, body.direction, who=who(request))
        with state.lock:
            view = views.constraint(state, name)
        return {"applies_from": done[0].applies_from, "changes": [vars(c) for c in done], "constraint": view}

    @r.patch("/objective", status_code=202, response_model=schemas.ObjectiveChange, responses=errors)
    def patch_objective(
        request: Request,
        values: dict[str, Any] = Body(
            description="Hyperparameter → new value; validated by the objective's own config model.",
            examples=[{"multiplier_lr": 0.05}],
        ),
    ) -> dict[str, Any]:
        done = changes.patch_objective(state, values, who=who(request))
        with state.lock:
            view = views.objective(state)
        return {"applies_from": done[0].applies_from, "changes": [vars(c) for c in done], "objective": view}

    def control(action: str):
        def handler(request: Request) -> dict[str, Any]:
            change, controls = changes.request(state, action, who=who(request))
            applies = change.applies_from if change is not None else state.next_iteration()
            return {"action": action, "changed": change is not None, "applies_from": applies, "controls": controls}

        handler.__name__ = action
        return handler

    summaries = {
        "pause": "Pause before the next iteration (the driver waits, polling every second).",
        "resume": "Resume a paused run.",
        "stop": "Stop gracefully: checkpoint at the next iteration boundary, then end the run.",
        "checkpoint": "Save a checkpoint at the next iteration boundary.",
    }
    for action, summary in summaries.items():
        r.add_api_route(
            f"/{action}", control(action), methods=["POST"], status_code=202, response_model=schemas.ControlResult,
            summary=summary, responses={409: ERRORS[409]},
        )
    return r


def create_app(state: CoordinatorState, token: str) -> FastAPI:
    app = FastAPI(
        title="crlhf control plane",
        version="1",
        description="Change a running crlhf training run. Changes apply from the next iteration boundary.",
        docs_url="/docs",
        redoc_url=None,
    )
    _install_error_handlers(app)
    app.include_router(_reads(state))
    app.include_router(_writes(state, token))

    app.include_router(live_router(lambda: state.telemetry))

    @app.get("/metrics", tags=["read"], response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
    async def metrics() -> Response:
        """The run's Prometheus metrics (services/coordinator/telemetry.py), in the text exposition format."""
        return Response(state.telemetry.render(), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(RequestMetricsMiddleware, telemetry=state.telemetry)  # also adds Server-Timing
    return app
