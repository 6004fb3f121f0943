"""Typed Python client of the crlhf control plane (httpx).

    from clients.client import ControlClient
    with ControlClient.discover(run_dir="runs/mu_ppo-20260101-120000") as c:
        print(c.status().iteration)
        c.set_constraint("meteor", threshold=0.25)      # applies from c.status().next_iteration
        c.patch_objective(multiplier_lr=0.05)

Address and token are found from (first match wins): explicit arguments; CRLHF_URL / CRLHF_RUN_DIR and
CRLHF_CONTROL_TOKEN; the newest run with a control.json under run.root's default ($CRLHF_RUNS, else ./runs)
or ~/crlhf-runs (clients/files.py). Every non-2xx answer raises
`ControlError` carrying the server's `detail`.
"""

from __future__ import annotations

import getpass
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from pydantic import TypeAdapter

from services.control import schemas

URL_ENV, RUN_DIR_ENV, TOKEN_ENV = "CRLHF_URL", "CRLHF_RUN_DIR", "CRLHF_CONTROL_TOKEN"


class ControlError(Exception):
    """A failed control-plane call. status is the HTTP status, or None when the server was not reached."""

    def __init__(self, detail: str, status: int | None = None) -> None:
        super().__init__(detail)
        self.detail, self.status = detail, status

    def __str__(self) -> str:
        return f"{self.detail} (HTTP {self.status})" if self.status is not None else self.detail


@dataclass(frozen=True)
class Target:
    url: str
    token: str | None
    source: str  # where the address came from, for error messages
    run_dir: Path | None = None  # where its files are (None for a bare --url), for reading them when it is gone


def _read_run_dir(run_dir: Path) -> tuple[str, str | None]:
    address = run_dir / "control.json"
    if not address.exists():
        raise ControlError(f"no control plane address in {run_dir} (control.json missing: is the run started, with control.enabled=true?)")
    try:
        url = json.loads(address.read_text())["url"]
    except (ValueError, KeyError) as err:
        raise ControlError(f"unreadable {address}: {err}") from None
    token_file = run_dir / "control.token"
    token = token_file.read_text().strip() if token_file.exists() else None
    return url, token


def discover(run_dir: str | Path | None = None, url: str | None = None, token: str | None = None,
             runs_root: str | Path | None = None) -> Target:
    """Where the control plane is and which token to send (see the module docstring for the order)."""
    from clients.files import NoRun, newest_run

    file_token = None
    if url is None and run_dir is None:
        url = os.environ.get(URL_ENV) or None
        run_dir = os.environ.get(RUN_DIR_ENV) or None
    if url is not None:
        return Target(url.rstrip("/"), token or os.environ.get(TOKEN_ENV), "--url / " + URL_ENV)
    if run_dir is None:
        if runs_root is not None:
            candidates = sorted(Path(runs_root).glob("*/control.json"), key=lambda p: p.stat().st_mtime)
            run_dir = candidates[-1].parent if candidates else None
        else:
            try:
                run_dir = newest_run("control.json")
            except NoRun as err:
                raise ControlError(f"{err} (looked for */control.json)") from None
        if run_dir is None:
            raise ControlError(
                f"cannot find a run: pass --run-dir DIR or --url URL, or set {RUN_DIR_ENV} / {URL_ENV} "
                f"(no {runs_root}/*/control.json here)"
            )
    url, file_token = _read_run_dir(Path(run_dir))
    return Target(url.rstrip("/"), token or os.environ.get(TOKEN_ENV) or file_token, str(run_dir), Path(run_dir))


class ControlClient:
    def __init__(self, url: str, token: str | None = None, *, user: str | None = None, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self._token = token
        headers = {"X-Crlhf-User": user or _user()}
        self._http = httpx.Client(base_url=self.url, timeout=timeout, headers=headers)

    @classmethod
    def discover(cls, run_dir: str | Path | None = None, url: str | None = None, token: str | None = None, **kwargs: Any) -> "ControlClient":
        target = discover(run_dir, url, token)
        return cls(target.url, target.token, **kwargs)

    # --- plumbing --------------------------------------------------------------------------------
    def _call(self, method: str, path: str, body: Any = None, auth: bool = False, params: dict[str, Any] | None = None) -> Any:
        headers = {}
        if auth:
            if not self._token:
                raise ControlError(f"changing the run needs its token: set {TOKEN_ENV} or use the run directory's control.token")
            headers["Authorization"] = f"Bearer {self._token}"
        content = None
        if body is not None:  # NaN/inf are sent as-is so the server names the bad field
            content = json.dumps(body, allow_nan=True).encode()
            headers["Content-Type"] = "application/json"
        try:
            response = self._http.request(method, path, content=content, headers=headers, params=params)
        except httpx.HTTPError as err:
            raise ControlError(f"cannot reach the control plane at {self.url}: {err}") from None
        if response.is_success:
            return response.json() if response.headers.get("content-type", "").startswith("application/json") else response.text
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text or response.reason_phrase
        raise ControlError(str(detail), response.status_code)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "ControlClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # --- reads -----------------------------------------------------------------------------------
    def health(self) -> schemas.Health:
        return schemas.Health.model_validate(self._call("GET", "/v1/health"))

    def status(self) -> schemas.Status:
        return schemas.Status.model_validate(self._call("GET", "/v1/status"))

    def constraints(self) -> list[schemas.Constraint]:
        return TypeAdapter(list[schemas.Constraint]).validate_python(self._call("GET", "/v1/constraints"))

    def constraint(self, name: str) -> schemas.Constraint:
        return schemas.Constraint.model_validate(self._call("GET", f"/v1/constraints/{_segment(name)}"))

    def objective(self) -> schemas.ObjectiveView:
        return schemas.ObjectiveView.model_validate(self._call("GET", "/v1/objective"))

    def nelder_mead(self) -> schemas.NelderMeadView:
        return schemas.NelderMeadView.model_validate(self._call("GET", "/v1/nelder-mead"))

    def audit(self, since: int = 0, limit: int | None = None) -> list[schemas.AuditEntry]:
        params = {"since": since, **({"limit": limit} if limit is not None else {})}
        return TypeAdapter(list[schemas.AuditEntry]).validate_python(self._call("GET", "/v1/audit", params=params))

    def metrics(self) -> str:
        return str(self._call("GET", "/metrics"))

    # --- changes (need the token) ----------------------------------------------------------------
    def set_constraint(self, name: str, threshold: float | None = None, direction: str | None = None) -> schemas.ConstraintChange:
        body = {k: v for k, v in (("threshold", threshold), ("direction", direction)) if v is not None}
        return schemas.ConstraintChange.model_validate(self._call("PUT", f"/v1/constraints/{_segment(name)}", body, auth=True))

    def patch_objective(self, values: dict[str, Any] | None = None, **kwargs: Any) -> schemas.ObjectiveChange:
        return schemas.ObjectiveChange.model_validate(self._call("PATCH", "/v1/objective", {**(values or {}), **kwargs}, auth=True))

    def _control(self, action: str) -> schemas.ControlResult:
        return schemas.ControlResult.model_validate(self._call("POST", f"/v1/{action}", auth=True))

    def pause(self) -> schemas.ControlResult:
        return self._control("pause")

    def resume(self) -> schemas.ControlResult:
        return self._control("resume")

    def stop(self) -> schemas.ControlResult:
        return self._control("stop")

    def checkpoint(self) -> schemas.ControlResult:
        return self._control("checkpoint")


def _segment(name: str) -> str:
    from urllib.parse import quote

    return quote(name, safe="")


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "client"
