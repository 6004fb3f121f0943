"""What a run did, from its run directory alone (finished or live): a table per reward and `report.png`.

Start and end are means over the first and the last quarter of the iterations (at least one each), so one
noisy batch neither makes nor breaks the verdict; "satisfied" means the constraint held on average over
the last quarter (its mean reward on θ's side for ge/le, within 5 % of |θ| for eq), and "held" counts the
iterations of that quarter in which it held batch by batch. Thresholds, violations,
multipliers and weights are the ones the run recorded (`metrics.jsonl`), so the table and the plot agree
with the log by construction.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

EQ_TOLERANCE = 0.05  # relative, for eq constraints


@dataclass
class RewardSummary:
    name: str
    start: float
    end: float
    threshold: float | None
    direction: str | None
    satisfied: bool | None  # None: not a constraint of this run's objective
    violated_at_start: bool | None
    held: tuple[int, int] | None  # (iterations of the last quarter in which it held, iterations)
    multiplier: float | None
    weight: float | None


def load_records(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no metrics yet (the run has not finished an iteration)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def reward_names(records: list[dict[str, Any]]) -> list[str]:
    return [k.split("/", 1)[1] for k in records[0] if k.startswith("reward/")] if records else []


def quarter(records: list[dict[str, Any]], last: bool) -> list[dict[str, Any]]:
    n = max(1, len(records) // 4)
    return records[-n:] if last else records[:n]


def finite_mean(records: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in records if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
    return statistics.fmean(values) if values else None


def _holds(value: float | None, threshold: float | None, direction: str | None) -> bool | None:
    """Whether a reward value (a batch mean, or a mean of them) is on the right side of θ."""
    if value is None or threshold is None:
        return None
    if direction == "eq":
        return abs(value - threshold) <= EQ_TOLERANCE * max(abs(threshold), 1e-9)
    return value <= threshold if direction == "le" else value >= threshold


def _held(records: list[dict[str, Any]], name: str, direction: str | None) -> tuple[int, int]:
    verdicts = [_holds(r.get(f"reward/{name}"), r.get(f"threshold/{name}"), direction) for r in records]
    return sum(v is True for v in verdicts), len(verdicts)


def summarise(run_dir: Path) -> list[RewardSummary]:
    records = load_records(run_dir)
    config = yaml.safe_load((run_dir / "config.yaml").read_text()) if (run_dir / "config.yaml").exists() else {}
    directions = {n: (r or {}).get("direction") for n, r in (config.get("rewards") or {}).items()}
    first, last = quarter(records, last=False), quarter(records, last=True)
    out = []
    for name in reward_names(records):
        threshold = records[-1].get(f"threshold/{name}")
        constrained = f"violation/{name}" in records[-1]
        direction = (directions.get(name) or _own_direction(config)) if constrained else None
        out.append(RewardSummary(
            name=name,
            start=finite_mean(first, f"reward/{name}") or 0.0,
            end=finite_mean(last, f"reward/{name}") or 0.0,
            threshold=threshold if constrained else None,
            direction=direction,
            satisfied=_holds(finite_mean(last, f"reward/{name}"), threshold, direction) if constrained else None,
            violated_at_start=(not _holds(finite_mean(first, f"reward/{name}"), finite_mean(first, f"threshold/{name}"), direction))
            if constrained else None,
            held=_held(last, name, direction) if constrained else None,
            multiplier=records[-1].get(f"multiplier/{name}"),
            weight=records[-1].get(f"weight/{name}"),
        ))
    return out


def _own_direction(config: dict[str, Any]) -> str | None:
    name = (config.get("objective") or {}).get("name")
    if name is None:
        return None
    from services.objectives.registry import objective_class

    return objective_class(name).config_cls.constraint_direction or "ge"


def table(run_dir: Path, rows: list[RewardSummary]) -> Any:
    from rich.table import Table

    records = load_records(run_dir)
    t = Table(title=f"{run_dir.name}: {len(records)} iterations (start = first quarter, end = last quarter)",
              caption_justify="left")
    # short headers, and the multiplier/weight columns only when the objective has them: 80 columns must do
    columns = ["reward", "start", "end", "θ", "dir", "satisfied", "held"]
    columns += ["λ"] * any(r.multiplier is not None for r in rows) + ["weight"] * any(r.weight is not None for r in rows)
    for column in columns:
        t.add_column(column, justify="left" if column in ("reward", "dir", "satisfied") else "right", no_wrap=True)
    for r in rows:
        verdict = "—" if r.satisfied is None else f"{'no' if r.violated_at_start else 'yes'} → {'yes' if r.satisfied else 'no'}"
        held = "—" if r.held is None else f"{r.held[0]}/{r.held[1]}"
        cells = [r.name, _fmt(r.start), _fmt(r.end), _fmt(r.threshold), r.direction or "—", verdict, held]
        cells += [_fmt(r.multiplier)] * ("λ" in columns) + [_fmt(r.weight)] * ("weight" in columns)
        t.add_row(*cells)
    kl = finite_mean(quarter(records, last=True), "kl")
    if kl is not None:
        t.caption = f"KL (last quarter, nats/token): {kl:.4f}" + (
            f"   eval score: {records[-1]['eval/score']:.4f}" if "eval/score" in records[-1] else "")
    return t


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.4g}"


def plot(run_dir: Path, path: Path | None = None) -> Path:
    """report.png: each reward against its threshold, violations, multipliers/weights, KL, eval score."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = load_records(run_dir)
    names = reward_names(records)
    it = [r["iteration"] for r in records]
    panels = len(names) + 3
    fig, axes = plt.subplots(panels, 1, figsize=(8, 2.2 * panels), sharex=True, constrained_layout=True)
    for ax, name in zip(axes, names):
        ax.plot(it, [r.get(f"reward/{name}") for r in records], label=f"reward/{name}")
        if any(f"threshold/{name}" in r for r in records):
            ax.plot(it, [r.get(f"threshold/{name}") for r in records], "--", label="threshold")
        ax.set_ylabel(name)
        ax.legend(loc="best", fontsize=8)
    ax = axes[len(names)]
    for name in names:
        if any(f"violation/{name}" in r for r in records):
            ax.plot(it, [r.get(f"violation/{name}") for r in records], label=f"violation/{name}")
    ax.set_ylabel("violation")
    ax.legend(loc="best", fontsize=8) if ax.lines else ax.text(0.5, 0.5, "no constraints", ha="center", transform=ax.transAxes)
    ax = axes[len(names) + 1]
    for key in sorted({k for r in records for k in r if k.startswith(("multiplier/", "weight/"))}):
        ax.plot(it, [r.get(key) for r in records], label=key)
    ax.set_ylabel("multiplier / weight")
    values = [v for line in ax.lines for v in line.get_ydata() if v is not None and math.isfinite(v)]
    if values and min(values) > 0 and max(values) / min(values) > 1e3:  # e.g. l3m's barrier weights span decades
        ax.set_yscale("log")
    ax.legend(loc="best", fontsize=8) if ax.lines else ax.text(0.5, 0.5, "fixed weights", ha="center", transform=ax.transAxes)
    ax = axes[len(names) + 2]
    ax.plot(it, [r.get("kl", math.nan) for r in records], label="KL to the reference (nats/token)")
    evals = [(r["iteration"], r["eval/score"]) for r in records if "eval/score" in r]
    if evals:
        twin = ax.twinx()
        twin.plot(*zip(*evals), "o-", color="tab:green", label="eval score")
        twin.set_ylabel("eval score")
    ax.set_ylabel("KL")
    ax.set_xlabel("iteration")
    ax.legend(loc="best", fontsize=8)
    target = path or run_dir / "report.png"
    fig.savefig(target, dpi=90)
    plt.close(fig)
    return target


def write(run_dir: Path) -> tuple[Any, Path]:
    """The summary table (a rich renderable) and report.png, for a finished or live run."""
    return table(run_dir, summarise(run_dir)), plot(run_dir)
