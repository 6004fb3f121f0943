"""JSON-safe values for views, the audit log and change validation."""

from __future__ import annotations

import math
from typing import Any

import torch
from pydantic import ValidationError

from services.coordinator.errors import ChangeError


def finite_or_none(value: Any) -> float | None:
    """A JSON-safe float: NaN/inf (e.g. an unset threshold) become None."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def float32_value(value: Any) -> float | None:
    """A float32 tensor entry as the shortest decimal that round-trips (0.23, not 0.23000000417232513)."""
    value = finite_or_none(value)
    return None if value is None else float(f"{value:.7g}")


def check_finite(name: str, value: Any) -> None:
    """Refuse NaN/inf anywhere inside a requested value (pydantic's strict mode admits them in floats)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ChangeError(f"{name} must be a finite number, got {value!r}")
    if isinstance(value, dict):
        for k, v in value.items():
            check_finite(f"{name}.{k}", v)
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            check_finite(f"{name}[{i}]", v)


def validation_message(prefix: str, err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"])
        parts.append(f"{where}: {e['msg']}" if where else e["msg"])
    return f"{prefix}: " + "; ".join(parts)


def json_safe(value: Any) -> Any:
    """Plain JSON data: tensors to lists, non-finite floats to None, tuples to lists."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, torch.Tensor):
        return json_safe(value.tolist())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)
