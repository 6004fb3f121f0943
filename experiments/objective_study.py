"""Every objective on the embedded task, several seeds each: one plot per objective, a table with mean ± spread
over seeds, and each paper's claim checked against the numbers.

    python experiments/objective_study.py --out docs/study                      # 15 configurations × seeds 0 1 2
    python experiments/objective_study.py --out /tmp/s --configs ppo l3m --seeds 0 --extra preset=smoke
    python experiments/objective_study.py --out docs/study --tabulate-only      # re-plot and re-tabulate finished runs

Runs go seed-major (every configuration's seed 0, then every seed 1, ...) and completed runs are reused, so an
interrupted study continues where it stopped and the tables always cover the seeds that finished (`n` says how
many). The task is the default preset (the product's defaults: LoRA, GRPO, 4 prompts × 4 completions) with three
rewards and fixed thresholds: METEOR ≥ 0.114 and topic ≥ 0.698 (the default preset's `threshold=auto` values,
measured on the untrained policy), and a length reward −|words − 6| / 20 ≥ −0.15 (within 3 words of 6; the
untrained model writes ~13). Every objective reads the thresholds in its own meaning (docs/THRESHOLDS.md):
lower bounds for most, equality targets for ξ-PPO and NM-PPO's start, caps for All-PPO. A control configuration,
`untrained`, runs the same prompts and sampling seeds without changing a weight: every seed's prompt order moves
the batch means by itself, and the "trained − untrained" table takes that out.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path
from typing import Any

THRESHOLDS = {"meteor": 0.114, "topic": 0.698, "words": -0.15}
TASK = [
    "rewards.words.kind=length", "rewards.words.params={target: 6, normalize: 20}",
    *[f"rewards.{name}.threshold={theta}" for name, theta in THRESHOLDS.items()],
    "checkpoint.every=0", "control.port=0",
]
# Reward dropout three ways, paper 002's comparison: keep the top 20 % (quantile), a random 20 %, or everything.
# `untrained` is the control: the same pipeline, prompts and sampling seeds with a learning rate too small to change
# a weight (the schema requires lr > 0; KL stays ~0), so its batch means show what the prompt order alone does to
# the rewards. Every other configuration is compared with it seed by seed (`effects`).
CONFIGS: dict[str, list[str]] = {
    "untrained": ["objective=ppo", "trainer.learning_rate=1e-12"],
    "ppo": ["objective=ppo"],
    "ppo_sat": ["objective=ppo_sat"],
    "mu_ppo": ["objective=mu_ppo"],
    "xi_ppo": ["objective=xi_ppo"],
    "all_ppo": ["objective=all_ppo"],
    "nm_ppo": ["objective=nm_ppo"],
    "fast_rl": ["objective=fast_rl"],
    "dropout_quantile": ["objective=reward_dropout", "objective.rule=quantile", "objective.quantile=0.8"],
    "dropout_random": ["objective=reward_dropout", "objective.rule=random", "objective.quantile=0.8"],
    "dropout_none": ["objective=reward_dropout", "objective.rule=quantile", "objective.quantile=0.0"],
    "ppo_lagrangian": ["objective=ppo_lagrangian"],
    # Per-stream normalisation gives the KL stream the weight N − Σ s(λ_i) > 1 against ≤ 1 for any reward
    # (docs/ALGORITHMS.md §3, "bounded weights cap what a constraint can do"); the spec's remedy is to only
    # centre the advantages, which leaves each stream at its own scale (the KL stream's is small).
    "mu_ppo_centred": ["objective=mu_ppo", "objective.normalize_advantage=false"],
    "xi_ppo_centred": ["objective=xi_ppo", "objective.normalize_advantage=false"],
    # A violation in reward units moves λ ~θ times slower for small rewards (METEOR θ ≈ 0.1) than for unit-scale
    # ones; `violation_scale=threshold` measures it relative to |θ| (docs/ALGORITHMS.md §3, "Violation units").
    "mu_ppo_relative": ["objective=mu_ppo", "objective.violation_scale=threshold"],
    "l3m": ["objective=l3m"],
}


# Evaluation only observes the policy, except for NM-PPO, whose thresholds move on it: the held-out eval_score
# is measured where a claim needs it (NM-PPO against fixed-threshold ξ-PPO and PPO) and skipped elsewhere, which
# saves ~100 s of every other run (64 held-out prompts, prefill-bound, cost ~4 rollouts each time).
EVALUATED = {"ppo", "xi_ppo", "nm_ppo"}


def seed_overrides(config: list[str], seed: int) -> list[str]:
    """The seed reaches the prompt order, the sampling and the objective's own draws (where it has any)."""
    from services.objectives.registry import objective_class

    objective = next(o.split("=", 1)[1] for o in config if o.startswith("objective="))
    own = ["objective.seed=%d" % seed] if "seed" in objective_class(objective).config_cls.model_fields else []
    return [f"trainer.seed={seed}", f"data.seed={seed}", *own]


def run_dir(out: Path, name: str, seed: int) -> Path:
    return out / "runs" / name / f"seed{seed}"


# What a finished run keeps: enough to tabulate, plot and audit it (the resolved config, every iteration's metrics,
# the threshold audit, the final evaluation), ~25 kB, small enough to commit under docs/study/runs/. The exported
# model and checkpoints (~380 MB a run), train.log (~180 kB) and the run's own report.png are deleted once the run
# has ended (`crlhf report RUN_DIR` redraws the report from what is kept).
KEPT = {"metrics.jsonl", "config.yaml", "audit.jsonl", "final_eval.json"}
DONE = "study-done.json"


def finished(path: Path, iterations: int) -> bool:
    metrics = path / "metrics.jsonl"
    return metrics.exists() and len(metrics.read_text().splitlines()) >= iterations and (path / DONE).exists()


def prune(path: Path, iterations: int) -> None:
    """Drop everything but KEPT and mark the run finished (the marker replaces `final/` as the proof it ended)."""
    import shutil

    for child in path.iterdir():
        if child.name not in KEPT:
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    (path / DONE).write_text(json.dumps({"iterations": iterations}) + "\n")


def train(name: str, seed: int, iterations: int, out: Path, extra: list[str]) -> None:
    from services.launch import main

    path = run_dir(out, name, seed)
    evaluation = [] if name in EVALUATED else ["evaluation.every=0"]
    args = [*CONFIGS[name], *TASK, *evaluation, *seed_overrides(CONFIGS[name], seed), f"trainer.iterations={iterations}", *extra,
            f"run.root={path.parent}", f"run.name={path.name}"]
    if path.exists():  # an interrupted run: start it again from scratch, the seeds make it the same run
        import shutil

        shutil.rmtree(path)
    if main(args) != 0:
        raise SystemExit(f"{name} seed {seed} failed; see {path / 'train.log'}")
    if not (path / "final").exists():
        raise SystemExit(f"{name} seed {seed} ended without exporting final/; see {path / 'train.log'}")
    prune(path, iterations)


FINAL_SCORE = "final_eval/score"


def load(path: Path) -> list[dict[str, Any]]:
    """metrics.jsonl's records; the evaluation after the last update (final_eval.json, where the run kept it)
    rides on the last record as FINAL_SCORE, so "final eval_score" is the trained policy's, not the last
    periodic evaluation's (which is taken *before* its update)."""
    records = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines() if line.strip()]
    final = path / "final_eval.json"
    if records and final.exists():
        records[-1][FINAL_SCORE] = json.loads(final.read_text())["eval/score"]
    return records


def mean_spread(values: list[float], digits: int = 3) -> str:
    """'m ± s' over seeds: s is the sample standard deviation (0 for one seed)."""
    if not values:
        return "—"
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.{digits}f} ± {spread:.{digits}f}"


def last_quarter(records: list[dict[str, Any]], key: str) -> float:
    from services.run.report import finite_mean, quarter

    return finite_mean(quarter(records, last=True), key)


def first_quarter(records: list[dict[str, Any]], key: str) -> float:
    from services.run.report import finite_mean, quarter

    return finite_mean(quarter(records, last=False), key)


def final_eval(records: list[dict[str, Any]]) -> float | None:
    if records and isinstance(records[-1].get(FINAL_SCORE), (int, float)):
        return records[-1][FINAL_SCORE]
    scores = [r["eval/score"] for r in records if isinstance(r.get("eval/score"), (int, float))]
    return scores[-1] if scores else None


def plot(name: str, runs: dict[int, list[dict[str, Any]]], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.0))
    axes = fig.subplots(1, len(THRESHOLDS) + 1)
    for ax, reward in zip(axes, THRESHOLDS):
        for seed, records in runs.items():
            ax.plot([r["iteration"] for r in records], [r[f"reward/{reward}"] for r in records], alpha=0.35, lw=1,
                    label=f"seed {seed}")
        ax.plot(*seed_mean(runs, f"reward/{reward}"), color="black", lw=2, label="mean over seeds")
        ax.plot(*seed_mean(runs, f"threshold/{reward}"), "--", color="grey", label="θ")
        ax.set_title(reward, fontsize=9)
        ax.set_xlabel("iteration", fontsize=8)
    kl = axes[-1]
    for seed, records in runs.items():
        kl.plot([r["iteration"] for r in records], [r.get("kl", float("nan")) for r in records], alpha=0.6, lw=1)
    kl.set_title("KL to the untrained policy (nats/token)", fontsize=9)
    kl.set_xlabel("iteration", fontsize=8)
    axes[0].legend(fontsize=6)
    fig.suptitle(f"{name} — batch means of 16 completions, {len(runs)} seed(s)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def plot_eval_scores(all_runs: dict[str, dict[int, list[dict[str, Any]]]], path: Path) -> bool:
    """Held-out eval_score over the run, mean over seeds, for every configuration that was evaluated more than
    once (NM-PPO's objective against fixed thresholds); the last point is the evaluation after the last update."""
    from matplotlib.figure import Figure

    curves = {}
    for name, runs in all_runs.items():
        per_seed = [[(r["iteration"], r["eval/score"]) for r in rec if isinstance(r.get("eval/score"), (int, float))]
                    + ([(rec[-1]["iteration"] + 1, rec[-1][FINAL_SCORE])] if FINAL_SCORE in rec[-1] else [])
                    for rec in runs.values()]
        points = min(len(p) for p in per_seed)
        if points > 2:
            curves[name] = ([x for x, _ in per_seed[0][:points]],
                            [statistics.fmean(p[i][1] for p in per_seed) for i in range(points)],
                            [statistics.pstdev([p[i][1] for p in per_seed]) for i in range(points)])
    if not curves:
        return False
    fig = Figure(figsize=(6, 3.2))
    ax = fig.subplots()
    for name, (xs, mean, spread) in curves.items():
        ax.plot(xs, mean, marker="o", ms=3, label=name)
        ax.fill_between(xs, [m - s for m, s in zip(mean, spread)], [m + s for m, s in zip(mean, spread)], alpha=0.15)
    ax.set_xlabel("iteration (evaluated before that update; the last point after the final one)", fontsize=8)
    ax.set_ylabel("held-out eval_score", fontsize=8)
    ax.set_title(f"eval_score, mean ± std over {min(len(r) for r in all_runs.values())} seeds", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return True


def seed_mean(runs: dict[int, list[dict[str, Any]]], key: str) -> tuple[list[int], list[float]]:
    length = min(len(r) for r in runs.values())
    xs = list(range(length))
    ys = []
    for i in xs:
        values = [records[i][key] for records in runs.values() if isinstance(records[i].get(key), (int, float))]
        ys.append(statistics.fmean(values) if values else float("nan"))
    return xs, ys


def tabulate(out: Path, all_runs: dict[str, dict[int, list[dict[str, Any]]]]) -> str:
    from services.run.report import summarise

    lines = [
        "| configuration | n | " + " | ".join(f"{r}: first → last quarter (θ)" for r in THRESHOLDS)
        + " | constraints satisfied over the last quarter (seeds) | final KL | final eval_score | final multipliers / weights |",
        "|---|---:|" + "---|" * len(THRESHOLDS) + "---|---:|---:|---|",
    ]
    for name, runs in all_runs.items():
        seeds = sorted(runs)
        cells = []
        for reward in THRESHOLDS:
            start = [first_quarter(runs[s], f"reward/{reward}") for s in seeds]
            end = [last_quarter(runs[s], f"reward/{reward}") for s in seeds]
            cells.append(f"{mean_spread(start)} → {mean_spread(end)} ({THRESHOLDS[reward]:g})")
        summaries = {s: summarise(run_dir(out, name, s)) for s in seeds}
        satisfied = []
        for reward in THRESHOLDS:
            verdicts = [row.satisfied for s in seeds for row in summaries[s] if row.name == reward]
            if any(v is not None for v in verdicts):
                direction = next(row.direction for row in summaries[seeds[0]] if row.name == reward)
                satisfied.append(f"{reward} {direction} {sum(v is True for v in verdicts)}/{len(verdicts)}")
        kl = [runs[s][-1]["kl"] for s in seeds if isinstance(runs[s][-1].get("kl"), (int, float))]
        evals = [e for s in seeds if (e := final_eval(runs[s])) is not None]
        learned = sorted({k for s in seeds for k in runs[s][-1] if k.split("/")[0] in ("multiplier", "weight")})
        learned_cell = ", ".join(f"{k} {statistics.fmean(runs[s][-1][k] for s in seeds if k in runs[s][-1]):.3g}" for k in learned)
        lines.append(
            f"| {name} | {len(seeds)} | " + " | ".join(cells) + f" | {'; '.join(satisfied) or '— (no constraints)'} "
            f"| {mean_spread(kl, 3)} | {mean_spread(evals, 2)} | {learned_cell or '—'} |"
        )
    return "\n".join(lines)


def claims(all_runs: dict[str, dict[int, list[dict[str, Any]]]]) -> str:
    """Each paper's claim as a number from these runs; the verdicts are for a reader, the numbers are the result."""

    def end(name: str, reward: str) -> list[float]:
        return [last_quarter(records, f"reward/{reward}") for records in all_runs.get(name, {}).values()]

    lines = []
    if "xi_ppo" in all_runs:
        gaps = {r: mean_spread([abs(v - t) / abs(t) for v in end("xi_ppo", r)], 2) for r, t in THRESHOLDS.items()}
        lines.append("- ξ-PPO tracks its thresholds (|end − θ| / |θ|, last quarter): " + ", ".join(f"{r} {g}" for r, g in gaps.items()))
    if "mu_ppo" in all_runs:
        lines.append("- μ-PPO ends at or above its thresholds (last quarter): " + ", ".join(
            f"{r} {mean_spread(end('mu_ppo', r))} vs θ {t:g}" for r, t in THRESHOLDS.items()))
    if "all_ppo" in all_runs and "ppo" in all_runs:
        kl = {n: [rec[-1]["kl"] for rec in all_runs[n].values()] for n in ("all_ppo", "ppo")}
        lines.append(f"- All-PPO keeps KL in budget: final KL {mean_spread(kl['all_ppo'])} vs fixed-weight PPO {mean_spread(kl['ppo'])}")
    if "fast_rl" in all_runs and "ppo" in all_runs:
        lines.append("- Fast RL keeps the rewards balanced (disparity: std across rewards of each reward's last-quarter "
                     "distance to θ relative to |θ|): fast_rl " + mean_spread(disparities(all_runs["fast_rl"]))
                     + ", fixed-weight ppo " + mean_spread(disparities(all_runs["ppo"])))
    drop = [n for n in ("dropout_quantile", "dropout_random", "dropout_none") if n in all_runs]
    if drop:
        lines.append("- Reward dropout, last-quarter means (METEOR, topic, words): " + "; ".join(
            f"{n.removeprefix('dropout_')} " + ", ".join(f"{statistics.fmean(end(n, r)):.3f}" for r in THRESHOLDS) for n in drop))
    if "l3m" in all_runs:
        lines.append(f"- L3M meets its length bound: words {mean_spread(end('l3m', 'words'))} vs θ {THRESHOLDS['words']:g}")
    if "nm_ppo" in all_runs:
        scores = {n: [e for rec in all_runs[n].values() if (e := final_eval(rec)) is not None] for n in ("nm_ppo", "xi_ppo", "ppo")
                  if n in all_runs}
        lines.append("- NM-PPO's final eval_score vs fixed thresholds: " + ", ".join(f"{n} {mean_spread(v, 2)}" for n, v in scores.items()))
        for other in ("xi_ppo", "ppo"):
            paired = [e - f for s, rec in all_runs["nm_ppo"].items() if s in all_runs.get(other, {})
                      and (e := final_eval(rec)) is not None and (f := final_eval(all_runs[other][s])) is not None]
            if paired:
                lines.append(f"  - nm_ppo − {other}, same seed: {mean_spread(paired, 2)} ({sum(d > 0 for d in paired)}/{len(paired)} seeds higher)")
        search = [rec[-1] for rec in all_runs["nm_ppo"].values()]
        lines.append("  - the search: " + "; ".join(
            f"{int(r.get('nm/evaluations', 0))} θ scored, {int(r.get('nm/iteration', 0))} Nelder–Mead steps, "
            f"converged {'yes' if r.get('nm/converged') else 'no'}, best {r.get('nm/best_score', float('nan')):.2f}" for r in search))
    return "\n".join(lines)


def effects(all_runs: dict[str, dict[int, list[dict[str, Any]]]]) -> str:
    """Last-quarter mean minus the untrained control's over the same seed (same prompts, same sampling seeds):
    the change training made, with the prompt order taken out. Mean ± spread over the seeds both finished."""
    control = all_runs.get("untrained")
    if not control:
        return ""
    lines = ["| configuration | seeds | " + " | ".join(f"{r}: trained − untrained, last quarter" for r in THRESHOLDS) + " |",
             "|---|---:|" + "---|" * len(THRESHOLDS)]
    for name, runs in all_runs.items():
        seeds = sorted(set(runs) & set(control))
        if name == "untrained" or not seeds:
            continue
        cells = [mean_spread([last_quarter(runs[s], f"reward/{r}") - last_quarter(control[s], f"reward/{r}") for s in seeds])
                 for r in THRESHOLDS]
        lines.append(f"| {name} | {len(seeds)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def stability(all_runs: dict[str, dict[int, list[dict[str, Any]]]]) -> str:
    """Every learned coefficient's start and end over the seeds, flagged where it collapsed to ~0 or sits at a
    bound of its squashing (sigmoid multipliers in (0, 1), tanh in (−1, 1), Fast RL's weights on the simplex)."""
    lines = ["| configuration | coefficient | first iteration | last iteration (min – max over seeds) | verdict |",
             "|---|---|---:|---:|---|"]
    for name, runs in all_runs.items():
        keys = sorted({k for rec in runs.values() for k in rec[-1] if k.split("/")[0] in ("multiplier", "weight") or k == "kl_coef"})
        for key in keys:
            starts = [rec[0][key] for rec in runs.values() if isinstance(rec[0].get(key), (int, float))]
            ends = [rec[-1][key] for rec in runs.values() if isinstance(rec[-1].get(key), (int, float))]
            if not starts or not ends:
                continue
            lines.append(f"| {name} | {key} | {statistics.fmean(starts):.3g} | {min(ends):.3g} – {max(ends):.3g} | {verdict(name, key, starts, ends)} |")
        if name == "fast_rl":  # the default caps w_max / w_min (docs/ALGORITHMS.md §8, step 6)
            ratios = {which: [max(ws) / min(ws) for rec in runs.values()
                              if (ws := [v for k, v in rec[which].items() if k.startswith("weight/")])] for which in (0, -1)}
            if ratios[0] and ratios[-1]:
                cap = max(ratios[-1]) >= 0.99 * 10.0
                lines.append(f"| {name} | w_max / w_min | {statistics.fmean(ratios[0]):.3g} | {min(ratios[-1]):.3g} – "
                             f"{max(ratios[-1]):.3g} | {'at the cap (10, the default)' if cap else 'inside the cap (10)'} |")
    return "\n".join(lines)


def verdict(name: str, key: str, starts: list[float], ends: list[float]) -> str:
    if name == "l3m":
        return "barrier weight (unbounded by design, §10)"
    if name == "ppo_lagrangian" and key.startswith("multiplier/") and max(ends) >= 0.99 * 5.0:
        return "at λ_max (5, the default clamp)"
    bounded = {"mu_ppo": (0.0, 1.0), "all_ppo": (0.0, 1.0), "xi_ppo": (-1.0, 1.0), "nm_ppo": (-1.0, 1.0), "fast_rl": (0.0, 1.0)}
    low, high = bounded.get(name, (None, None)) if key != "kl_coef" and not key.startswith("weight/kl") else (None, None)
    if low is not None and (max(ends) > high - 0.01 or min(ends) < low + 0.01 and low == 0.0):
        return "at a bound"
    if max(abs(e) for e in ends) < 0.01 * max(abs(s) for s in starts):
        return "collapsed to ~0"
    change = statistics.fmean(ends) - statistics.fmean(starts)
    return f"moving ({change:+.3g})" if abs(change) > 0.01 * max(abs(statistics.fmean(starts)), 1e-9) else "flat (< 1 % change)"


def disparities(runs: dict[int, list[dict[str, Any]]]) -> list[float]:
    return [statistics.pstdev([(last_quarter(rec, f"reward/{r}") - t) / abs(t) for r, t in THRESHOLDS.items()]) for rec in runs.values()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--iterations", type=int, default=12)
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--configs", nargs="*", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--extra", nargs="*", default=[], help="more overrides for every run")
    parser.add_argument("--tabulate-only", action="store_true", help="train nothing; tabulate the finished runs")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.tabulate_only:
        import ray

        for seed in args.seeds:
            for name in args.configs:
                if finished(run_dir(args.out, name, seed), args.iterations):
                    continue
                if not ray.is_initialized():  # one cluster for the whole study
                    ray.init(address="local", num_cpus=4, include_dashboard=False,
                             runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1"}})
                train(name, seed, args.iterations, args.out, args.extra)
                report(args)
        if ray.is_initialized():
            ray.shutdown()
    print(report(args))


def report(args: argparse.Namespace) -> str:
    all_runs: dict[str, dict[int, list[dict[str, Any]]]] = {}
    for name in args.configs:
        runs = {s: load(run_dir(args.out, name, s)) for s in args.seeds if finished(run_dir(args.out, name, s), args.iterations)}
        if runs:
            all_runs[name] = runs
            plot(name, runs, args.out / f"{name}.png")
    plot_eval_scores(all_runs, args.out / "eval_score.png")
    text = "\n\n".join(part for part in (tabulate(args.out, all_runs), effects(all_runs), claims(all_runs), stability(all_runs)) if part) + "\n"
    (args.out / "table.md").write_text(text)
    return text


if __name__ == "__main__":
    main()
