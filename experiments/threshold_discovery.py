"""Both ways of finding thresholds (docs/THRESHOLDS.md) on the embedded task, with real runs:

1. proxy points: one PPO run per reward (the other reward's weight 0, still scored), evaluated often;
   `services.thresholds.proxy_points` fits the eval_score surface and writes θ*, a contour plot and an override file;
2. NM-PPO: one `nm_ppo` run; its trajectory (the thresholds it trained on, window by window) is drawn over
   the proxy contour, and threshold/eval_score against iteration in a second plot.

    python experiments/threshold_discovery.py --out docs/thresholds
    python experiments/threshold_discovery.py --out /tmp/t --proxy-iterations 4 --nm-iterations 6 --extra preset=smoke

Writes into --out: proxy.png, proxy.txt (override file), points.csv, nm_trajectory.png, nm_on_proxy.png,
summary.json, and the runs under runs/.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

REWARDS = ("meteor", "topic")
# Sized for 2 CPU cores (see experiments/objective_study.py): short episodes, small batches, frequent
# evaluation on a small held-out set, so each run gives many (r_1, r_2, eval) points.
COMPACT = [
    "rollout.batch_size=8", "rollout.sampling.max_new_tokens=12", "trainer.epochs=1",
    "trainer.minibatch_unit=sequence", "trainer.minibatch_size=4", "trainer.learning_rate=3e-5",
    "evaluation.every=2", "evaluation.max_examples=32", "checkpoint.every=0", "control.port=0",
]


REUSE = False  # --reuse: read runs already in --out instead of training them again (e.g. after a cut-off)


def launch(name: str, root: Path, overrides: list[str]) -> list[dict[str, Any]]:
    from services.launch import main

    if REUSE and (root / name / "metrics.jsonl").exists():
        print(f"reusing {root / name}")
    elif main([*overrides, *COMPACT, f"run.root={root}", f"run.name={name}"]) != 0:
        raise SystemExit(f"{name} failed; see {root / name / 'train.log'}")
    return [json.loads(line) for line in (root / name / "metrics.jsonl").read_text().splitlines() if line.strip()]


def proxy_runs(root: Path, iterations: int, extra: list[str]) -> list[Path]:
    dirs = []
    for reward in REWARDS:
        weights = [f"rewards.{r}.weight={1 if r == reward else 0}" for r in REWARDS]
        launch(f"proxy-{reward}", root, ["objective=ppo", f"trainer.iterations={iterations}", *weights, *extra])
        dirs.append(root / f"proxy-{reward}")
    return dirs


def windows(records: list[dict[str, Any]]) -> list[tuple[int, tuple[float, ...]]]:
    """(first iteration, θ) each time the NM-PPO target changed."""
    out: list[tuple[int, tuple[float, ...]]] = []
    for r in records:
        theta = tuple(r.get(f"threshold/{n}") for n in REWARDS)
        if None in theta or any(t != t for t in theta):  # before the first evaluation: no target yet
            continue
        if not out or out[-1][1] != theta:
            out.append((r["iteration"], theta))
    return out


def plot_nm(records: list[dict[str, Any]], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.4))
    axes = fig.subplots(1, len(REWARDS) + 1)
    its = [r["iteration"] for r in records]
    for ax, name in zip(axes, REWARDS):
        ax.plot(its, [r[f"reward/{name}"] for r in records], label="batch mean")
        ax.plot(its, [r.get(f"threshold/{name}", float("nan")) for r in records], "--", drawstyle="steps-post", label="θ (NM target)")
        evals = [(r["iteration"], r[f"eval/reward/{name}"]) for r in records if f"eval/reward/{name}" in r]
        if evals:
            ax.plot(*zip(*evals), "o", markersize=3, label="held-out mean")
        ax.set_title(name)
        ax.set_xlabel("iteration")
        ax.legend(fontsize=7)
    scores = [(r["iteration"], r["eval/score"]) for r in records if "eval/score" in r]
    ax = axes[-1]
    if scores:
        ax.plot(*zip(*scores), "o-", markersize=3, label="eval_score")
    best = [(r["iteration"], r["nm/best_score"]) for r in records if r.get("nm/best_score") == r.get("nm/best_score")]
    if best:
        ax.plot(*zip(*best), drawstyle="steps-post", label="NM best")
    ax.set_title("held-out eval_score")
    ax.set_xlabel("iteration")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--proxy-iterations", type=int, default=16)
    parser.add_argument("--nm-iterations", type=int, default=30)
    parser.add_argument("--extra", nargs="*", default=[], help="more overrides for every run")
    parser.add_argument("--reuse", action="store_true", help="reuse runs already under --out/runs (no retraining)")
    args = parser.parse_args()
    global REUSE
    REUSE = args.reuse
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    from services.thresholds.proxy_fit import fit_proxy_points, plot_contour
    from services.thresholds.proxy_points import main as proxy_points_main
    from services.thresholds.proxy_points import points_from_runs

    out, root = args.out, args.out / "runs"
    out.mkdir(parents=True, exist_ok=True)
    ray.init(num_cpus=4, include_dashboard=False, runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1"}})
    try:
        dirs = proxy_runs(root, args.proxy_iterations, args.extra)
        code = proxy_points_main(["--runs", *map(str, dirs), "--plot", str(out / "proxy.png"), "--out", str(out / "proxy.txt"),
                                  "--save-points", str(out / "points.csv"), "--rewards", *REWARDS])
        if code != 0:
            raise SystemExit("proxy_points failed")
        nm = launch("nm_ppo", root, ["objective=nm_ppo", f"trainer.iterations={args.nm_iterations}",
                                     "objective.cache_mode=absolute", *args.extra])
    finally:
        ray.shutdown()

    points = points_from_runs(dirs, REWARDS)
    fit = fit_proxy_points(points.values, points.scores, names=REWARDS)
    path = windows(nm)
    plot_contour(fit, out / "nm_on_proxy.png", trajectory=[theta for _, theta in path],
                 title="NM-PPO thresholds over the proxy-point surface")
    plot_nm(nm, out / "nm_trajectory.png")
    last = nm[-1]
    summary = {
        "proxy": {"points": len(points.scores), "theta_star": dict(zip(REWARDS, map(float, fit.theta_star))),
                  "predicted_eval": float(fit.predicted_eval), "r2": float(fit.r2)},
        "nm_ppo": {"windows": [{"from_iteration": k, "theta": dict(zip(REWARDS, t))} for k, t in path],
                   "best_score": last.get("nm/best_score"), "best": {n: last.get(f"nm/best/{n}") for n in REWARDS},
                   "evaluations": last.get("nm/evaluations"), "converged": bool(last.get("nm/converged"))},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
