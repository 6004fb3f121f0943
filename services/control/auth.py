"""Bearer-token auth for the changing endpoints.

The token comes from `control.token`, else env CRLHF_CONTROL_TOKEN, else `secrets`; it is written to
<run dir>/control.token (mode 0600, atomically) for the CLI. It is compared in constant time and never
logged or echoed.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path

from fastapi import HTTPException, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

TOKEN_ENV = "CRLHF_CONTROL_TOKEN"
TOKEN_FILE = "control.token"


def resolve_token(configured: SecretStr | None) -> tuple[str, str]:
    """(token, where it came from: config | env | generated)."""
    if configured is not None:
        return configured.get_secret_value(), "config"
    from_env = os.environ.get(TOKEN_ENV, "").strip()
    if from_env:
        return from_env, "env"
    return secrets.token_urlsafe(32), "generated"


def write_token_file(run_dir: Path, token: str) -> Path:
    """<run_dir>/control.token, readable by the owner only; created 0600 before any byte is written."""
    run_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=run_dir, prefix=TOKEN_FILE + ".", suffix=".tmp")  # mkstemp creates 0600
    try:
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, run_dir / TOKEN_FILE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return run_dir / TOKEN_FILE


_bearer = HTTPBearer(auto_error=False, description="Token from <run dir>/control.token or CRLHF_CONTROL_TOKEN.")


def _unauthorized(detail: str, error: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": f'Bearer error="{error}"'})


def bearer_guard(token: str):
    """A FastAPI dependency accepting only `Authorization: Bearer <token>`."""
    expected = token.encode()

    def require_token(request: Request) -> None:
        header = request.headers.get("authorization")
        if not header:
            raise _unauthorized(
                "missing bearer token: send 'Authorization: Bearer <token>' (the token is in <run dir>/control.token)",
                "invalid_request",
            )
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise _unauthorized("malformed Authorization header: expected 'Bearer <token>'", "invalid_request")
        # Header values arrive latin-1 decoded, so this encodes any value; compare_digest is constant time.
        if not secrets.compare_digest(value.strip().encode("latin-1", "replace"), expected):
            raise _unauthorized("invalid bearer token", "invalid_token")

    async def dependency(request: Request, _: HTTPAuthorizationCredentials | None = Security(_bearer)) -> None:
        # Security(_bearer) only declares the scheme in the OpenAPI document; the header is checked here.
        require_token(request)

    return dependency
