"""What `crlhf status|constraints|audit` show when the control plane is gone: the run directory's files.

- `metrics.jsonl`: one record per committed iteration. Its last record holds what was in force then: each
  reward's value and, for the objective's constraints only, `threshold/<r>` and `violation/<r>` (so a
  reward without them is not a constraint — the same rule /v1/constraints follows), multipliers, weights.
- `config.yaml`: objective, planned iterations, directions; `audit.jsonl`: every change, as /v1/audit.
- `coordinator.pt` is not read: it holds the same thresholds as the last record, and reading it needs torch.

Also where runs are: `find_run` looks in --run-dir, CRLHF_RUN_DIR, else the newest run under run.root's
default ($CRLHF_RUNS, else ./runs) and ~/crlhf-runs (where `ray job submit --working-dir` runs land).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import yaml

from services.config.run_root import default_runs_root
from services.control import schemas

RUN_DIR_ENV = "CRLHF_RUN_DIR"
RUN_FILES = ("control.json", "metrics.jsonl", "config.yaml")  # any of them marks a run directory


class NoRun(Exception):
    """No run directory found, or one without the file a command needs."""


def run_roots() -> list[Path]:
    roots = [default_runs_root(), Path.home() / "crlhf-runs"]
    return [r for i, r in enumerate(roots) if r not in roots[:i]]


def newest_run(marker: str | None = None) -> Path:
    """The most recently written run directory (one holding `marker`, or any run file) under `run_roots()`."""
    markers = (marker,) if marker else RUN_FILES
    found = [p for root in run_roots() for m in markers for p in root.glob(f"*/{m}")]
    if not found:
        where = " or ".join(str(r) for r in run_roots())
        raise NoRun(f"cannot find a run: pass --run-dir DIR (or set {RUN_DIR_ENV} / CRLHF_RUNS); nothing under {where}")
    return max(found, key=lambda p: p.stat().st_mtime).parent


def find_run(run_dir: str | Path | None = None, marker: str | None = None) -> Path:
    chosen = run_dir or os.environ.get(RUN_DIR_ENV) or None
    return Path(chosen) if chosen is not None else newest_run(marker)


def _records(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        raise NoRun(f"{path} missing: the run has not committed an iteration")
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            break  # a torn last line: the run was killed mid-write
    return out


def _config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "config.yaml"
    return (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def status(run_dir: Path) -> schemas.Status:
    records, config = _records(run_dir), _config(run_dir)
    last = records[-1] if records else {}
    iteration = int(last.get("iteration", -1))
    evals = [r for r in records if "eval/score" in r]
    last_eval = None
    if evals:
        metrics = {k: _number(v) for k, v in evals[-1].items() if k.startswith("eval/")}
        last_eval = schemas.LastEval(iteration=int(evals[-1]["iteration"]), metrics=metrics)
    return schemas.Status(
        objective=(config.get("objective") or {}).get("name", "?"), state="stopped", iteration=iteration,
        running_iteration=None, next_iteration=iteration + 1, paused=False, stop_requested=False, checkpoint_requested=False,
        stopped=True, throughput=schemas.Throughput(tokens_per_second=_number(last.get("tokens_per_second")),
                                                    seconds_per_iteration=_number(last.get("time/iteration"))),
        last_eval=last_eval, pending_changes=0, audit_entries=len(audit(run_dir)), uptime_seconds=0.0,
    )


def planned_iterations(run_dir: Path) -> int | None:
    return (_config(run_dir).get("trainer") or {}).get("iterations")


def constraints(run_dir: Path) -> list[schemas.Constraint]:
    records, config = _records(run_dir), _config(run_dir)
    last = records[-1] if records else {}
    rewards = config.get("rewards") or {}
    names = [k.split("/", 1)[1] for k in last if k.startswith("reward/")] or list(rewards)
    out = []
    for name in names:
        constrained = f"threshold/{name}" in last or f"violation/{name}" in last
        out.append(schemas.Constraint(
            name=name, kind=(rewards.get(name) or {}).get("kind", "?"), constrained=constrained,
            threshold=_number(last.get(f"threshold/{name}")) if constrained else None,
            direction=_direction(config, name) if constrained else None,
            current=_number(last.get(f"reward/{name}")),
            violation=_number(last.get(f"violation/{name}")) if constrained else None,
            multiplier=_number(last.get(f"multiplier/{name}")), weight=_number(last.get(f"weight/{name}")),
            measured_at=last.get("iteration"), pending=None,
        ))
    return out


def _direction(config: dict[str, Any], name: str) -> str | None:
    own = ((config.get("rewards") or {}).get(name) or {}).get("direction")
    objective = (config.get("objective") or {}).get("name")
    if own is not None or objective is None:
        return own
    from services.objectives.registry import objective_class

    return objective_class(objective).config_cls.constraint_direction


def audit(run_dir: Path, since: int = 0, limit: int | None = None) -> list[schemas.AuditEntry]:
    from services.coordinator.audit import AUDIT_FILE, read_audit

    entries = [schemas.AuditEntry.model_validate(e) for e in read_audit(run_dir / AUDIT_FILE)][since:]
    if limit is not None:  # as /v1/audit: the latest `limit`
        entries = entries[-limit:] if limit else []
    return entries
