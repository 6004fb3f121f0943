"""Property-based fuzzing of every operation in the live OpenAPI schema (schemathesis): no 5xx, responses
conform to the documented schemas and status codes. Authenticated, so the changing endpoints are exercised
past the token check; an iteration loop runs beside it so changes meet a moving boundary."""

from __future__ import annotations

from services.coordinator import protocol
import os
import threading
import time
from collections.abc import Iterator

import pytest
import schemathesis
from schemathesis import GenerationMode
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from . import live as live_plane
from .live import Live, smoke_config


@pytest.fixture(scope="module")
def fuzz_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    live = live_plane.start(smoke_config(), tmp_path_factory.mktemp("fuzz"))
    stop = threading.Event()

    def iterate() -> None:
        k = 0
        while not stop.is_set():
            got = protocol.begin_iteration(live.state, k)
            time.sleep(0.01)
            protocol.commit(live.state, k, {"objective_state": got.state,
                                              "record": {"iteration": k, "reward/meteor": 0.1, "tokens_per_second": 50.0}})
            k += 1

    loop = threading.Thread(target=iterate, daemon=True)
    loop.start()
    yield live
    stop.set()
    loop.join()
    live_plane.stop(live)


def cases() -> list[tuple[str, str, GenerationMode]]:
    """(METHOD, path, mode) for every operation, from the same app the server runs (no server needed to
    collect). Negative (schema-violating) data exists only for a body or constrained query parameters
    (any string is a valid path segment)."""
    from services.control.app import create_app
    from services.coordinator.state import CoordinatorState

    doc = create_app(CoordinatorState(smoke_config()), "x" * 32).openapi()
    out = []
    for path, item in doc["paths"].items():
        for method, op in item.items():
            out.append((method.upper(), path, GenerationMode.POSITIVE))
            if op.get("requestBody") or any(p["in"] == "query" for p in op.get("parameters", [])):
                out.append((method.upper(), path, GenerationMode.NEGATIVE))
    return out


# schemathesis' own pytest integration (from_fixture) breaks on pytest 9, so Hypothesis drives each operation.
@pytest.mark.parametrize(("method", "path", "mode"), cases(), ids=lambda v: getattr(v, "value", v))
def test_no_server_errors_and_documented_responses(fuzz_target, method, path, mode):
    schema = schemathesis.openapi.from_url(f"{fuzz_target.url}/openapi.json")  # the live schema
    operation = schema[path][method]
    checks = [not_a_server_error, response_schema_conformance, status_code_conformance, content_type_conformance]
    statuses: list[int] = []

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=int(os.environ.get("CRLHF_FUZZ_EXAMPLES", "40")), deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def fuzz(case) -> None:
        statuses.append(case.call_and_validate(base_url=fuzz_target.url, headers=fuzz_target.auth, checks=checks).status_code)

    fuzz()
    assert statuses and max(statuses) < 500
