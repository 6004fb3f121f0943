"""Refused requests. Each carries the HTTP status the control plane answers with; the state is untouched."""

from __future__ import annotations


class ChangeError(ValueError):
    """A rejected request: the value or body is invalid (the message names it)."""

    status = 422


class NotFoundError(ChangeError):
    status = 404


class ConflictError(ChangeError):
    """The request is well-formed but does not apply to this run in its current state."""

    status = 409
