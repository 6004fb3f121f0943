"""crlhf against the system a user would pick instead: TRL's GRPOTrainer, on the same work, side by side.

    python bench/peers.py --trl-python .venv-trl/bin/python            # 2 rounds A-B-A-B, 6 iterations each
    python bench/peers.py --rounds 3 --iterations 10

Same work for both: SmolLM2-135M-Instruct (the embedded HF copy), the same prompts in the same order (drawn
by crlhf's own sampler and written to a file TRL reads unshuffled), K = 4 completions of 4 prompts per
iteration, at most 20 new tokens (min 2), temperature 1 and top-k 20, METEOR against the reference as the
only reward, LoRA r = 16 / α = 32 on the attention and MLP projections of both, lr 2e-4 constant, KL
coefficient 0.2 fixed, and 4 optimizer steps of 8 completions per iteration (2 passes over each batch).
Each uses its best generation backend here: crlhf vLLM's CPU build (rollout.backend=auto), TRL HF
`generate` (its vLLM path needs CUDA). Both run bf16 autocast on this CPU (crlhf's mixed_precision=auto;
TRL bf16=True).

Reported per system (median over rounds) and as ratios crlhf / TRL: completions per second end to end
(process start to exit: start-up, model loading, generation, training), steady completions per second
(iterations after the first), peak memory (the machine's used memory above its idle level, sampled every
0.2 s: crlhf is several processes), and the METEOR reward of every iteration.

TRL needs its own virtual environment (its transformers pin differs from vLLM's CPU build):
    python3.11 -m venv .venv-trl && .venv-trl/bin/pip install torch==2.13.0 && .venv-trl/bin/pip install trl==1.16.0 peft==0.21.2 nltk
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
K, PROMPTS, MAX_NEW = 4, 4, 20


def write_work(path: Path, iterations: int) -> str:
    """The prompts crlhf's sampler draws for `iterations` iterations, as chat messages + references."""
    sys.path.insert(0, str(ROOT))
    from services.config.overrides import build_config
    from services.data.dialogues import PromptSampler, load_examples
    from services.models.loading import resolve_model_path

    config = build_config(["objective=ppo"])
    sampler = PromptSampler(load_examples(config.data, "train"), seed=config.data.seed)
    with path.open("w") as f:
        for _ in range(iterations):
            for example in sampler.next_batch(PROMPTS):
                n = len(example.context)
                messages = [{"role": "user" if (n - i) % 2 == 1 else "assistant", "content": t} for i, t in enumerate(example.context)]
                f.write(json.dumps({"messages": messages, "reference": example.reference}) + "\n")
    return resolve_model_path(config.model.name_or_path)


class MemoryPeak:
    """Peak of the machine's used memory above the level when started (all processes a run spawns)."""

    def __init__(self) -> None:
        import psutil

        self._psutil = psutil
        self.base = psutil.virtual_memory().used
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._psutil.virtual_memory().used - self.base)
            time.sleep(0.2)

    def __enter__(self) -> "MemoryPeak":
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def run_crlhf(iterations: int, out: Path) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled"}
    cmd = [sys.executable, "-m", "services.launch", "objective=ppo", f"trainer.iterations={iterations}", "evaluation.every=0",
           "rewards.topic=null", "rewards.meteor.weight=1.0", "objective.target_kl=null", "objective.kl_coef=0.2",
           "checkpoint.every=0", "control.port=0", f"run.root={out}", "run.name=run"]
    with MemoryPeak() as memory:
        start = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL, stderr=(out / "crlhf.log").open("w"))
        wall = time.perf_counter() - start
    records = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    steady = sum(r["time/wall"] for r in records[1:])
    trained = sum(r["response_tokens_mean"] * K * PROMPTS for r in records)
    return {
        "wall_seconds": wall,
        "completions": K * PROMPTS * len(records),
        "steady_completions_per_second": K * PROMPTS * (len(records) - 1) / steady,
        "learner_tokens_per_second": trained / sum(r["time/train"] for r in records),
        "reward_per_iteration": [r["reward/meteor"] for r in records],
        "peak_memory_bytes": memory.peak,
    }


def run_trl(python: str, work: Path, model: str, iterations: int, out: Path) -> dict:
    result = out / "trl.json"
    cmd = [python, str(ROOT / "bench" / "peers_trl.py"), "--work", str(work), "--model", model, "--out", str(result),
           "--iterations", str(iterations), "--prompts", str(PROMPTS), "--k", str(K), "--max-new-tokens", str(MAX_NEW), "--bf16"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NLTK_DATA": str(_nltk_data())}
    with MemoryPeak() as memory:
        start = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=(out / "trl.log").open("w"))
        wall = time.perf_counter() - start
    data = json.loads(result.read_text())
    ends = data["step_end_seconds"]
    per_iteration = len(ends) // iterations  # optimizer steps per generation batch
    steady = ends[-1] - ends[per_iteration - 1]  # iterations after the first, as for crlhf
    return {
        "wall_seconds": wall,
        "completions": data["completions"],
        "steady_completions_per_second": K * PROMPTS * (iterations - 1) / steady,
        "train_seconds": data["train_seconds"],
        "learner_tokens_per_second": None,
        "reward_per_iteration": data["reward_per_iteration"],
        "peak_memory_bytes": memory.peak,
    }


def _nltk_data() -> Path:
    sys.path.insert(0, str(ROOT))
    from services.rewards.wordnet import ensure_wordnet, nltk_data_dir

    ensure_wordnet()
    return nltk_data_dir()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trl-python", default=str(ROOT / ".venv-trl" / "bin" / "python"))
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--iterations", type=int, default=6)
    p.add_argument("--out", default=None, help="directory for logs and results (default: a temporary one)")
    args = p.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="crlhf-peers-"))
    out.mkdir(parents=True, exist_ok=True)
    work = out / "work.jsonl"
    model = write_work(work, args.iterations)
    results: dict[str, list[dict]] = {"crlhf": [], "trl": []}
    for r in range(args.rounds):  # A-B-A-B: drift on a shared machine hits both alike
        for name in ("crlhf", "trl"):
            directory = out / f"{name}-{r}"
            directory.mkdir(exist_ok=True)
            got = run_crlhf(args.iterations, directory) if name == "crlhf" else run_trl(args.trl_python, work, model, args.iterations, directory)
            results[name].append(got)
            print(f"round {r} {name}: {got['completions'] / got['wall_seconds']:.2f} completions/s end to end, "
                  f"peak {got['peak_memory_bytes'] / 2**30:.2f} GiB, METEOR {got['reward_per_iteration'][0]:.3f} → "
                  f"{got['reward_per_iteration'][-1]:.3f}", flush=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print(table(results))


def table(results: dict[str, list[dict]]) -> str:
    def med(name: str, key: str) -> float:
        return statistics.median(r[key] for r in results[name])

    def rate(name: str) -> float:
        return statistics.median(r["completions"] / r["wall_seconds"] for r in results[name])

    for name in results:
        for r in results[name]:
            curve = r["reward_per_iteration"]
            r["reward_first"] = curve[0]
            r["reward_last_half"] = statistics.fmean(curve[len(curve) // 2 :])
    rows = [
        ("completions/s, end to end", rate("crlhf"), rate("trl")),
        ("peak memory above idle, GiB", med("crlhf", "peak_memory_bytes") / 2**30, med("trl", "peak_memory_bytes") / 2**30),
        ("METEOR, first iteration", med("crlhf", "reward_first"), med("trl", "reward_first")),
        ("METEOR, mean of the last half of the run", med("crlhf", "reward_last_half"), med("trl", "reward_last_half")),
        ("wall seconds", med("crlhf", "wall_seconds"), med("trl", "wall_seconds")),
    ]
    lines = ["| | crlhf | TRL GRPOTrainer | crlhf / TRL |", "|---|---|---|---|"]
    lines += [f"| {label} | {a:.3f} | {b:.3f} | {a / b:.2f}× |" for label, a, b in rows]
    steady = med("crlhf", "steady_completions_per_second"), med("trl", "steady_completions_per_second")
    lines.append(f"| completions/s, steady (iterations after the first) | {steady[0]:.3f} | {steady[1]:.3f} | {steady[0] / steady[1]:.2f}× |")
    lines.append(f"| crlhf learner tokens/s | {med('crlhf', 'learner_tokens_per_second'):.1f} | (not separable: TRL generates inside its steps) | |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
