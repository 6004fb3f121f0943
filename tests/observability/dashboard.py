"""The dashboard JSON as data: panels, their PromQL targets, and Grafana variable substitution."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "crlhf.json"
VARIABLE = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))")


def load() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def all_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Top-level panels and those nested in collapsed rows."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


@dataclass(frozen=True)
class Target:
    panel_id: int
    panel_title: str
    ref_id: str
    expr: str

    @property
    def name(self) -> str:
        return f"{self.panel_id}:{self.ref_id} {self.panel_title}"


def targets(dashboard: dict[str, Any] | None = None) -> list[Target]:
    dashboard = dashboard or load()
    return [
        Target(p["id"], p["title"], t["refId"], t["expr"])
        for p in all_panels(dashboard)
        if p.get("type") != "row"
        for t in p.get("targets", [])
    ]


def substitute(expr: str, values: dict[str, str]) -> str:
    """Grafana's variable interpolation for the variables this dashboard uses (`$x` and `${x}`)."""

    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name not in values:
            raise KeyError(f"no value for ${name} in {expr!r}")
        return values[name]

    return VARIABLE.sub(repl, expr)
