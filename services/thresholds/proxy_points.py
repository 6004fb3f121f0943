"""`python -m services.thresholds.proxy_points`: [000] Algorithm 2, phase 1 — thresholds θ* from single-reward runs.

    python -m services.thresholds.proxy_points --runs runs/proxy-meteor runs/proxy-topic \\
        --plot proxy.png --out proxy.txt
    python -m services.launch @proxy.txt trainer.iterations=100      # phase 2: ξ-PPO at θ*

Each single-reward PPO run evaluates its policy on the held-out split every `evaluation.every` iterations;
every such record in its metrics.jsonl (plus final_eval.json) is one point (r_1..r_N, eval_score), with
r_i = `eval/reward/<name>` and eval_score = `eval/score`. Pooled over the runs, the points trace the eval
surface over the reward space; services/thresholds/proxy_fit.py fits it (polynomial + KDE mask, A.3) and θ* is its
argmax where the data is dense enough to trust it. The correlation between rewards is why θ* is not simply
each run's own best value.

Producing the runs (one per reward, every reward still *scored* so each point has all N coordinates: give
the others weight 0 — `rewards.X=null` would drop X from scoring and from the points):

    python -m services.launch objective=ppo rewards.meteor.weight=1 rewards.topic.weight=0 \\
        evaluation.every=2 run.name=proxy-meteor
    python -m services.launch objective=ppo rewards.meteor.weight=0 rewards.topic.weight=1 \\
        evaluation.every=2 run.name=proxy-topic

Points can also come from a CSV (`--points`): a header with one column per reward (`meteor` or
`eval/reward/meteor`) and a score column (`eval_score`, `eval/score`, `eval` or `score`); `--save-points`
writes that format. See docs/THRESHOLDS.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from services.thresholds.proxy_fit import ProxyFit, ProxyFitConfig, fit_proxy_points

__all__ = ["Points", "main", "override_lines", "points_from_runs", "read_points_csv", "write_points_csv"]

SCORE_KEY = "eval/score"
REWARD_PREFIX = "eval/reward/"
SCORE_COLUMNS = ("eval_score", "eval/score", "eval", "score")
SOURCE_COLUMN = "source"
# Objectives whose phase 2 takes the proxy point as thresholds (ξ-PPO is [000]'s best).
THRESHOLD_OBJECTIVES = ("xi_ppo", "mu_ppo", "all_ppo")


class ProxyPointsError(ValueError):
    """Bad input (missing files, missing rewards, too few points); the message says what to do."""


@dataclass
class Points:
    """K measurements (r_1..r_N, eval_score) and where each came from."""

    names: tuple[str, ...]
    values: np.ndarray  # (K, N)
    scores: np.ndarray  # (K,)
    sources: list[str] = field(default_factory=list)  # (K,) run directory or CSV file
    skipped: int = 0  # records dropped for non-finite values

    def __len__(self) -> int:
        return len(self.scores)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.sources:
            out[s] = out.get(s, 0) + 1
        return out

    def concat(self, other: Points) -> Points:
        if other.names != self.names:
            raise ProxyPointsError(f"cannot pool points over rewards {self.names} with points over {other.names}")
        return Points(self.names, np.vstack([self.values, other.values]), np.concatenate([self.scores, other.scores]),
                      self.sources + other.sources, self.skipped + other.skipped)  # fmt: skip


# ------------------------------------------------------------------------------------------- reading


def read_run_records(run_dir: Path, include_final: bool = True) -> list[dict[str, Any]]:
    """The evaluation records of one run: metrics.jsonl lines with `eval/score`, then final_eval.json."""
    metrics = run_dir / "metrics.jsonl"
    if not metrics.is_file():
        raise ProxyPointsError(f"{run_dir}: no metrics.jsonl (is it a run directory written by services.launch?)")
    records = []
    for number, line in enumerate(metrics.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ProxyPointsError(f"{metrics}:{number}: not a JSON record ({err.msg})") from None
        if SCORE_KEY in record:
            records.append(record)
    final = run_dir / "final_eval.json"
    if include_final and final.is_file():
        records.append(json.loads(final.read_text()))
    return records


def points_from_runs(run_dirs: Sequence[Path], rewards: Sequence[str] | None = None, include_final: bool = True) -> Points:
    """Pool the evaluation records of single-reward runs into points.

    rewards: the coordinates, in order; None = every reward evaluated in any record (in first-seen order).
    A reward never evaluated in some run is the `rewards.X=null` mistake; the error says how to run it instead.
    """
    by_run = {Path(d): read_run_records(Path(d), include_final) for d in run_dirs}
    for run_dir, records in by_run.items():
        if not records:
            raise ProxyPointsError(
                f"{run_dir}: no evaluation records (eval/score); run it with evaluation.every=N (N ≥ 1) and a held-out split"
            )
    seen = list(dict.fromkeys(
        k.removeprefix(REWARD_PREFIX) for records in by_run.values() for r in records for k in r if k.startswith(REWARD_PREFIX)
    ))  # fmt: skip
    names = tuple(rewards) if rewards else tuple(seen)
    if not names:
        raise ProxyPointsError("no eval/reward/<name> in any record; were the runs evaluated with their rewards configured?")
    for run_dir, records in by_run.items():
        for name in names:
            if all(REWARD_PREFIX + name not in r for r in records):
                raise ProxyPointsError(
                    f"{run_dir}: reward '{name}' is never evaluated, so its points lack that coordinate. Train each "
                    f"single-reward run with every reward configured and the others at weight 0 (e.g. "
                    f"rewards.{name}.weight=0), not rewards.{name}=null; or fit over a subset with --rewards"
                )
    rows, scores, sources, skipped = [], [], [], 0
    for run_dir, records in by_run.items():
        for record in records:
            missing = [n for n in names if REWARD_PREFIX + n not in record]
            if missing:
                where = record.get("iteration", record.get("after_iteration", "?"))
                raise ProxyPointsError(f"{run_dir}: the record of iteration {where} lacks eval/reward/{missing[0]}")
            row = [_number(record[REWARD_PREFIX + n]) for n in names]
            score = _number(record[SCORE_KEY])
            if not all(math.isfinite(v) for v in (*row, score)):
                skipped += 1
                continue
            rows.append(row)
            scores.append(score)
            sources.append(str(run_dir))
    return Points(names, np.array(rows, dtype=float).reshape(-1, len(names)), np.array(scores, dtype=float), sources, skipped)


def read_points_csv(path: Path, rewards: Sequence[str] | None = None) -> Points:
    """Points from a CSV: reward columns (`meteor` or `eval/reward/meteor`), one score column, optional `source`."""
    try:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            header = list(reader.fieldnames or [])
            table = list(reader)
    except OSError as err:
        raise ProxyPointsError(f"cannot read {path}: {err.strerror or err}") from None
    score_column = next((c for c in SCORE_COLUMNS if c in header), None)
    if score_column is None:
        raise ProxyPointsError(f"{path}: no score column (one of {', '.join(SCORE_COLUMNS)}); header: {', '.join(header)}")
    columns = {c.removeprefix(REWARD_PREFIX): c for c in header if c not in (score_column, SOURCE_COLUMN)}
    names = tuple(rewards) if rewards else tuple(columns)
    unknown = [n for n in names if n not in columns]
    if unknown:
        raise ProxyPointsError(f"{path}: no column for reward '{unknown[0]}' (reward columns: {', '.join(columns)})")
    if not names:
        raise ProxyPointsError(f"{path}: no reward columns besides '{score_column}'")
    rows, scores, sources, skipped = [], [], [], 0
    for number, line in enumerate(table, start=2):
        try:
            row = [float(line[columns[n]]) for n in names]
            score = float(line[score_column])
        except (TypeError, ValueError):
            raise ProxyPointsError(f"{path}:{number}: not a number in {line}") from None
        if not all(math.isfinite(v) for v in (*row, score)):
            skipped += 1
            continue
        rows.append(row)
        scores.append(score)
        sources.append(line.get(SOURCE_COLUMN) or str(path))
    return Points(names, np.array(rows, dtype=float).reshape(-1, len(names)), np.array(scores, dtype=float), sources, skipped)


def write_points_csv(points: Points, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*points.names, "eval_score", SOURCE_COLUMN])
        for row, score, source in zip(points.values, points.scores, points.sources, strict=True):
            writer.writerow([*(repr(float(v)) for v in row), repr(float(score)), source])
    return path


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")  # e.g. a null in the record: skipped like NaN


# ------------------------------------------------------------------------------------------- writing


def override_lines(fit: ProxyFit, objective: str = "xi_ppo", sources: Sequence[str] = ()) -> list[str]:
    """The override file for phase 2: `objective=…` and one `rewards.<name>.threshold=θ*_i` per reward.

    `services.launch @FILE` reads it (comments allowed). The thresholds are written with 6 significant
    digits: far finer than any RM's evaluation noise.
    """
    header = [
        "# Proxy point θ* ([000] Algorithm 2, phase 1), written by services.thresholds.proxy_points",
        f"# {len(fit.scores)} points" + (f" from: {', '.join(sources)}" if sources else ""),
        f"# surface: degree {fit.config.degree}, R² {fit.r2:.3f}; predicted eval_score at θ*: {fit.predicted_eval:.4f}",
        "# use: python -m services.launch @THIS_FILE [more overrides]  (with the proxy runs' reward definitions)",
    ]
    body = [f"objective={objective}"] + [
        f"rewards.{name}.threshold={float(value):.6g}" for name, value in zip(fit.names, fit.theta_star, strict=True)
    ]
    return header + body


def summary(fit: ProxyFit, points: Points) -> dict[str, Any]:
    return {
        "theta_star": {n: float(v) for n, v in zip(fit.names, fit.theta_star, strict=True)},
        "predicted_eval": fit.predicted_eval,
        "r2": fit.r2,
        "points": len(points),
        "skipped": points.skipped,
        "sources": points.counts(),
        "density_threshold": fit.density_threshold,
        "degree": fit.config.degree,
    }


# ---------------------------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m services.thresholds.proxy_points", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    src = p.add_argument_group("points (at least one source)")
    src.add_argument("--runs", nargs="+", type=Path, default=[], metavar="DIR", help="single-reward run directories")
    src.add_argument("--points", nargs="+", type=Path, default=[], metavar="CSV", help="CSV files of points")
    src.add_argument("--rewards", nargs="+", metavar="NAME", help="reward coordinates, in order (default: all common ones)")
    src.add_argument("--no-final", action="store_true", help="ignore final_eval.json in run directories")
    fit = p.add_argument_group("surface fit (services/thresholds/proxy_fit.py)")
    fit.add_argument("--degree", type=int, default=2, help="polynomial degree (A.3 used 10; 2 is far more stable)")
    fit.add_argument("--ridge-alpha", type=float, default=1e-6, help="L2 penalty on the coefficients")
    fit.add_argument("--density-quantile", type=float, default=0.05,
                     help="mask grid cells less dense than this quantile of the points' own densities")  # fmt: skip
    fit.add_argument("--density-threshold", type=float, default=None, help="absolute KDE density threshold instead")
    fit.add_argument("--grid-size", type=int, default=None, help="grid points per axis (default: as many as fit)")
    out = p.add_argument_group("outputs")
    out.add_argument("--out", type=Path, help="override file for `services.launch @FILE`")
    out.add_argument("--objective", default="xi_ppo", choices=THRESHOLD_OBJECTIVES, help="phase-2 objective in --out")
    out.add_argument("--plot", type=Path, help="contour PNG of the masked surface, the points and θ*")
    out.add_argument("--plot-rewards", nargs=2, metavar=("X", "Y"), help="the two rewards to plot (default: the first two)")
    out.add_argument("--save-points", type=Path, help="write the pooled points as CSV (readable by --points)")
    out.add_argument("--json", action="store_true", help="print a JSON summary instead of text")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not args.runs and not args.points:
        print("proxy_points: give --runs DIR … and/or --points FILE.csv …", file=sys.stderr)
        return 2
    try:
        points = _load(args)
        config = ProxyFitConfig(degree=args.degree, ridge_alpha=args.ridge_alpha, density_quantile=args.density_quantile,
                                density_threshold=args.density_threshold, grid_size=args.grid_size)  # fmt: skip
        fit = fit_proxy_points(points.values, points.scores, config, names=points.names)
        written = _write_outputs(args, fit, points)
    except ValueError as err:  # ProxyPointsError and proxy_fit's own validation
        print(f"proxy_points: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(summary(fit, points) | {"written": {k: str(v) for k, v in written.items()}}, indent=1))
        return 0
    counts = ", ".join(f"{s}: {n}" for s, n in points.counts().items())
    print(f"points: {len(points)} ({counts})" + (f"; {points.skipped} non-finite skipped" if points.skipped else ""))
    mask = (f"density ≥ {fit.density_threshold:.4g}" if args.density_threshold is not None
            else f"density ≥ {fit.density_threshold:.4g} ({args.density_quantile:.0%} quantile of the points)")  # fmt: skip
    print(f"surface: degree {fit.config.degree}, R² {fit.r2:.3f}, trusted where {mask}")
    theta = "  ".join(f"{n}={v:.4f}" for n, v in zip(fit.names, fit.theta_star, strict=True))
    print(f"θ*: {theta}  (predicted eval_score {fit.predicted_eval:.4f})")
    if "out" in written:
        print(f"wrote {written['out']}: python -m services.launch @{written['out']} [more overrides]")
    for key in ("plot", "points"):
        if key in written:
            print(f"wrote {written[key]}")
    return 0


def _load(args: argparse.Namespace) -> Points:
    parts: list[Points] = []
    if args.runs:
        parts.append(points_from_runs(args.runs, args.rewards, include_final=not args.no_final))
    rewards = args.rewards or (parts[0].names if parts else None)
    parts += [read_points_csv(path, rewards) for path in args.points]
    points = parts[0]
    for part in parts[1:]:
        points = points.concat(part)
    return points


def _write_outputs(args: argparse.Namespace, fit: ProxyFit, points: Points) -> dict[str, Path]:
    written: dict[str, Path] = {}
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(override_lines(fit, args.objective, list(points.counts()))) + "\n")
        written["out"] = args.out
    if args.plot is not None:
        from services.thresholds.proxy_fit import plot_contour

        if len(fit.names) < 2:
            raise ProxyPointsError("--plot needs at least two rewards (a contour is over two reward axes)")
        x, y = args.plot_rewards or fit.names[:2]
        unknown = [n for n in (x, y) if n not in fit.names]
        if unknown:
            raise ProxyPointsError(f"--plot-rewards: unknown reward '{unknown[0]}' (rewards: {', '.join(fit.names)})")
        dims = (fit.names.index(x), fit.names.index(y))
        written["plot"] = plot_contour(fit, args.plot, dims=dims, title=f"proxy point from {len(points)} points")
    if args.save_points is not None:
        written["points"] = write_points_csv(points, args.save_points)
    return written


if __name__ == "__main__":
    sys.exit(main())
