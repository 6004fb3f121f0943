"""Time per phase and tokens/s of short runs, side by side in one Ray session.

    python bench/phases.py                                   # smoke preset: token vs sequence minibatches
    python bench/phases.py --iterations 6 --variant "preset=smoke" --variant "preset=smoke rollout.batch_size=16"
    python bench/phases.py --overlap                         # trainer.async_rollout=false vs true

Each variant is a full `services.launch` run (real actors); the first iteration (actor start-up, lazy
allocations) is excluded from the medians. Ratios are relative to the first variant. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

PHASES = ["time/rollout", "time/reward", "time/train", "time/sync", "time/wall"]
DEFAULT_VARIANTS = [
    "preset=smoke trainer.minibatch_unit=token",
    "preset=smoke trainer.minibatch_unit=sequence trainer.minibatch_size=4",
]
# Overlapped rollout: generation of iteration k+1 runs while the learner trains on k. evaluation.every=0
# keeps the held-out evaluation (which cannot overlap) out of the medians.
OVERLAP_VARIANTS = [
    "preset=smoke evaluation.every=0 trainer.async_rollout=false",
    "preset=smoke evaluation.every=0 trainer.async_rollout=true",
]


def run_variant(overrides: str, iterations: int, root: Path, index: int) -> list[dict]:
    from services.launch import main

    args = overrides.split() + [f"trainer.iterations={iterations}", f"run.root={root}", f"run.name=v{index}", "checkpoint.every=0", "control.port=0"]
    if main(args) != 0:
        raise SystemExit(f"variant failed: {overrides}")
    return [json.loads(line) for line in (root / f"v{index}" / "metrics.jsonl").read_text().splitlines()]


def summarise(records: list[dict]) -> dict[str, float]:
    steady = records[1:] or records
    out = {phase: statistics.median(r[phase] for r in steady) for phase in PHASES}
    out["tokens/s"] = statistics.median(r["tokens_per_second"] for r in steady)
    out["tokens/iter"] = statistics.median(r["tokens"] for r in steady)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=6)
    parser.add_argument("--variant", action="append", help="space-separated overrides; repeatable")
    parser.add_argument("--overlap", action="store_true", help="compare trainer.async_rollout=false/true (smoke preset)")
    parser.add_argument("--extra", default="", help="overrides appended to every variant, e.g. 'rollout.batch_size=16'")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    ray.init(num_cpus=4, include_dashboard=False, runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1"}})
    variants = [f"{v} {args.extra}".strip() for v in (args.variant or (OVERLAP_VARIANTS if args.overlap else DEFAULT_VARIANTS))]
    with tempfile.TemporaryDirectory() as tmp:
        results = [summarise(run_variant(v, args.iterations, Path(tmp), i)) for i, v in enumerate(variants)]
    ray.shutdown()
    cols = [*PHASES, "tokens/s", "tokens/iter"]
    print(f"\nmedian over iterations 2..{args.iterations} (seconds unless stated; ratio vs first variant)\n")
    print(ratio_table([f"`{v}`" for v in variants], results, cols, [c.removeprefix("time/") for c in cols]))


def ratio_table(
    variants: list[str], results: list[dict[str, float]], cols: list[str], headers: list[str], digits: int = 2
) -> str:
    """Markdown table: one row per variant, each cell 'value (ratio vs the first variant×)'."""
    base = results[0]
    lines = ["| variant | " + " | ".join(headers) + " |", "|---|" + "---|" * len(cols)]
    for variant, result in zip(variants, results):
        cells = [f"{result[c]:.{digits}f} ({result[c] / base[c]:.2f}×)" if base[c] else f"{result[c]:.{digits}f}" for c in cols]
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
