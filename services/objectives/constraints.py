"""Constraint bookkeeping shared by logging, the coordinator and the control plane."""

from __future__ import annotations

import math


def violation(value: float, threshold: float | None, direction: str) -> float | None:
    """How far `value` is on the wrong side of its threshold (0 when satisfied; None without a threshold).

    ge: max(0, θ − v); le: max(0, v − θ); eq: |v − θ|.
    """
    if threshold is None or math.isnan(threshold):
        return None
    if direction == "ge":
        return max(0.0, threshold - value)
    if direction == "le":
        return max(0.0, value - threshold)
    return abs(value - threshold)
