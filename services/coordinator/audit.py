"""The audit log: one entry per change (who, what, old → new, from which iteration), kept in memory and in
`audit.jsonl`, which is also the coordinator's write-ahead log (see services/coordinator/store.py)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

AUDIT_FILE = "audit.jsonl"


@dataclass
class Change:
    """One audited change: who asked, when, what, and the first iteration it applies to."""

    time: float
    who: str
    target: str  # e.g. rewards.meteor.threshold, objective.multiplier_lr, control.paused
    old: Any
    new: Any
    applies_from: int
    seq: int = 0  # position in the audit log, 0-based


def read_audit(path: Path) -> list[dict[str, Any]]:
    """Every complete line of an audit log; a torn last line (a crash mid-append) was never acknowledged."""
    entries: list[dict[str, Any]] = []
    if path.exists():
        with path.open() as f:
            for line in f:
                try:
                    entries.append(json.loads(line))
                except ValueError:
                    break
    return entries


def audit_lines(entries: Sequence[Change]) -> list[str]:
    return [json.dumps(asdict(entry), default=str) + "\n" for entry in entries]


def append_lines(path: Path, lines: list[str]) -> None:
    """Append and fsync: a change is acknowledged only once its line is on disk."""
    with path.open("a") as f:
        f.writelines(lines)
        f.flush()
        os.fsync(f.fileno())
