"""The FastAPI control plane over a `CoordinatorState` (docs: docs/API.md, live at /docs).

Reads are open; changes need the bearer token. Every change is queued in the state under its lock and
applies from the next iteration boundary, which the response names (`applies_from`). Errors are
`{"detail": "..."}` naming the problem; a stack trace never reaches a client.

Reads are `async def` and run on the event loop: they only take the state's lock briefly (disk writes happen
outside it), and skipping the thread-pool hand-off keeps their latency low on a CPU-starved training node.
Changes are plain `def`, run in FastAPI's thread pool, because they wait for their write to reach the disk.
Every request is counted and timed (`services/control/metrics.py`), and every response carries
`Server-Timing: app;dur=<ms>`, to tell server time from network and client time.
"""

from __future__ import annotations

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
from services.coordination import ChangeError, CoordinatorState
from services.telemetry import CONTENT_TYPE_LATEST

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


def _reads(state: CoordinatorState) -> APIRouter:
    r = APIRouter(prefix="/v1", tags=["read"])

    @r.get("/health", response_model=schemas.Health)
    async def health() -> dict[str, Any]:
        return {"status": "ok", "iteration": state.last_committed}

    @r.get("/status", response_model=schemas.Status)
    async def status() -> dict[str, Any]:
        return state.status()

    @r.get("/constraints", response_model=list[schemas.Constraint])
    async def constraints() -> list[dict[str, Any]]:
        return state.constraints()

    @r.get("/constraints/{name}", response_model=schemas.Constraint, responses={404: ERRORS[404], 422: ERRORS[422]})
    async def constraint(name: str = Path(description="Reward name.")) -> dict[str, Any]:
        return state.constraint(name)

    @r.get("/objective", response_model=schemas.ObjectiveView)
    async def objective() -> dict[str, Any]:
        return state.objective_view()

    @r.get("/nelder-mead", response_model=schemas.NelderMeadView, responses={404: ERRORS[404], 409: ERRORS[409]})
    async def nelder_mead() -> dict[str, Any]:
        return state.nelder_mead_view()

    @r.get("/audit", response_model=list[schemas.AuditEntry], responses={422: ERRORS[422]})
    async def audit(
        since: int = Query(0, ge=0, le=2**62, description="First sequence number to return."),
        limit: int | None = Query(None, ge=0, le=100_000, description="At most this many (the latest ones)."),
    ) -> list[dict[str, Any]]:
        return state.audit_view(since, limit)

    return r


def _writes(state: CoordinatorState, token: str) -> APIRouter:
    r = APIRouter(prefix="/v1", tags=["change"], dependencies=[Depends(bearer_guard(token))], responses={401: ERRORS[401]})
    errors = {code: ERRORS[code] for code in (400, 404, 409, 422)}

    @r.put("/constraints/{name}", status_code=202, response_model=schemas.ConstraintChange, responses=errors)
    def update_constraint(request: Request, body: schemas.ConstraintUpdate, name: str = Path(description="Reward name.")) -> dict[str, Any]:
        changes = state.update_constraint(name, body.threshold, body.direction, who=who(request))
        return {"applies_from": changes[0].applies_from, "changes": [vars(c) for c in changes], "constraint": state.constraint(name)}

    @r.patch("/objective", status_code=202, response_model=schemas.ObjectiveChange, responses=errors)
    def patch_objective(
        request: Request,
        values: dict[str, Any] = Body(
            description="Hyperparameter → new value; validated by the objective's own config model.",
            examples=[{"multiplier_lr": 0.05}],
        ),
    ) -> dict[str, Any]:
        changes = state.patch_objective(values, who=who(request))
        return {"applies_from": changes[0].applies_from, "changes": [vars(c) for c in changes], "objective": state.objective_view()}

    def control(action: str):
        def handler(request: Request) -> dict[str, Any]:
            change, controls = state.request(action, who=who(request))
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
        """The run's Prometheus metrics (services/telemetry.py), in the text exposition format."""
        return Response(state.telemetry.render(), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(RequestMetricsMiddleware, telemetry=state.telemetry)  # also adds Server-Timing
    return app
