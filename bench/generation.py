"""Generation backends side by side: tokens/s of HF vs vLLM, and weight-sync time.

    python bench/generation.py                                  # tiny + SmolLM2, float32, 32 × 64 tokens
    python bench/generation.py --models smollm2 --dtype bfloat16 --rounds 7
    python bench/generation.py --sync-ray                       # + the object-store path through Ray actors

Each backend runs in its own long-lived subprocess (vLLM binds the process's OpenMP threads and caps
torch's thread count, which would handicap HF in the same process); rounds alternate HF, vLLM, HF, ... so
both see the same background load, and the first round of each (lazy allocation, kernel compilation) is
dropped. Every round generates exactly `--new-tokens` per sequence (min_new_tokens = max_new_tokens), so
the work is identical. Reports medians and the vLLM/HF ratio as a Markdown table.

The tiny model is the embedded tiny-llama with head_dim 32 instead of 16 (vLLM's CPU attention needs
≥ 32; see tests/rollout/helpers.py); same size class: 2 layers, hidden 64, 49k vocabulary.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _model_path(name: str, scratch: Path) -> str:
    sys.path.insert(0, str(ROOT))
    from services.models.loading import SMOLLM2, resolve_model_path

    if name == "smollm2":
        return resolve_model_path(SMOLLM2)
    if name == "tiny":
        from tests.rollout.helpers import build_tiny_vllm_model

        return str(build_tiny_vllm_model(scratch / "tiny-llama-hd32"))
    return name  # any local HF causal LM directory


def _worker(conn: Any, backend: str, path: str, dtype_name: str, batch: int, new_tokens: int, prompt_tokens: int) -> None:
    """Builds one backend, then answers ('generate', seed) and ('sync', seed) until ('stop',)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, str(ROOT))
    import torch

    from services.config.schema import SamplingConfig
    from services.models.loading import load_causal_lm, load_tokenizer

    dtype = getattr(torch, dtype_name)
    start = time.perf_counter()
    if backend == "hf":
        from services.rollout.hf import HFBackend

        torch.set_num_threads(os.cpu_count() or 1)
        engine = HFBackend(load_causal_lm(path, dtype, torch.device("cpu")), load_tokenizer(path))
    else:  # "vllm", or "vllm:nobind" = OpenMP threads not pinned to cores (VLLM_CPU_OMP_THREADS_BIND=nobind)
        if backend.endswith(":nobind"):
            os.environ["VLLM_CPU_OMP_THREADS_BIND"] = "nobind"
        from services.rollout.vllm import EngineOptions, VLLMBackend

        engine = VLLMBackend(path, EngineOptions(dtype=dtype, max_model_len=prompt_tokens + new_tokens, max_num_seqs=batch))
    conn.send({"start_seconds": time.perf_counter() - start})
    reference = load_causal_lm(path, dtype, torch.device("cpu")).state_dict()
    # Prompts of `prompt_tokens` real vocabulary ids, different per row.
    prompts = [[1] + [(100 + 37 * i + 11 * j) % 40_000 + 100 for j in range(prompt_tokens - 1)] for i in range(batch)]
    sampling = SamplingConfig(max_new_tokens=new_tokens, min_new_tokens=new_tokens, top_k=20, temperature=1.0)
    while True:
        msg = conn.recv()
        if msg[0] == "stop":
            break
        if msg[0] == "generate":
            gen = engine.generate(prompts, sampling, seed=msg[1])
            conn.send({"tokens": gen.num_tokens, "seconds": gen.seconds})
        elif msg[0] == "sync":
            g = torch.Generator().manual_seed(msg[1])
            state = {k: v + 1e-3 * torch.randn(v.shape, generator=g).to(v.dtype) for k, v in reference.items()}
            t0 = time.perf_counter()
            engine.load_weights(state)
            conn.send({"seconds": time.perf_counter() - t0})


class Worker:
    def __init__(self, backend: str, path: str, args: argparse.Namespace) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(
            target=_worker, args=(child, backend, path, args.dtype, args.batch, args.new_tokens, args.prompt_tokens), daemon=True
        )
        self.proc.start()
        self.start_seconds = self.conn.recv()["start_seconds"]

    def ask(self, *msg: Any) -> dict[str, float]:
        self.conn.send(msg)
        return self.conn.recv()

    def close(self) -> None:
        self.conn.send(("stop",))
        self.proc.join(timeout=60)


def bench_model(name: str, path: str, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    workers = {b: Worker(b, path, args) for b in args.backends}
    tps: dict[str, list[float]] = {b: [] for b in workers}
    sync: dict[str, list[float]] = {b: [] for b in workers}
    for r in range(args.rounds + 1):
        for b, w in workers.items():
            out = w.ask("generate", r)
            if r > 0:
                tps[b].append(out["tokens"] / out["seconds"])
            if args.sync_rounds and r < args.sync_rounds + 1:
                s = w.ask("sync", r)["seconds"]
                if r > 0:
                    sync[b].append(s)
        print(f"  {name} round {r}: " + ", ".join(f"{b} {tps[b][-1]:.0f} tok/s" for b in workers if tps[b]), file=sys.stderr)
    result = {
        b: {
            "tokens/s": statistics.median(tps[b]),
            "min": min(tps[b]),
            "max": max(tps[b]),
            "start_s": workers[b].start_seconds,
            "load_weights_s": statistics.median(sync[b]) if sync[b] else float("nan"),
        }
        for b in workers
    }
    for w in workers.values():
        w.close()
    return result


def bench_sync_ray(path: str, args: argparse.Namespace) -> dict[str, float]:
    """The production path: learner state dict → object store → RolloutActor(vLLM).load_weights, wall time."""
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray
    import torch

    from services.actors.rollout import RolloutActor
    from services.config.schema import RootConfig
    from services.models.loading import load_causal_lm

    config = RootConfig()
    config.model.name_or_path = path
    config.model.dtype = args.dtype
    config.rollout.backend = "vllm"
    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1"}})
    try:
        actor = RolloutActor.remote(config, 0)
        ray.get(actor.describe.remote())
        state = load_causal_lm(path, getattr(torch, args.dtype), torch.device("cpu")).state_dict()
        walls, inside = [], []
        for v in range(args.sync_rounds + 1):
            t0 = time.perf_counter()
            ref = ray.put(state)
            seconds = ray.get(actor.load_weights.remote(ref, v + 1))
            if v > 0:
                walls.append(time.perf_counter() - t0)
                inside.append(seconds)
        return {"wall_s": statistics.median(walls), "reload_s": statistics.median(inside),
                "mbytes": sum(t.numel() * t.element_size() for t in state.values()) / 1e6}
    finally:
        ray.shutdown()


def bench_overlap(path: str, args: argparse.Namespace) -> dict[str, float] | str:
    """Wall time per iteration of full runs with trainer.async_rollout=false vs true (vLLM backend).

    Reuses bench/phases.py's runner (real actors, first iteration excluded). Returns a reason string when
    this checkout has no `trainer.async_rollout` yet.
    """
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "bench"))
    from services.config.schema import TrainerConfig

    if "async_rollout" not in TrainerConfig.model_fields:
        return "trainer.async_rollout is not in this checkout's config schema yet"
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray
    from phases import run_variant, summarise

    base = f"preset=smoke model.name_or_path={path} rollout.backend=vllm model.dtype={args.dtype}"
    ray.init(num_cpus=4, include_dashboard=False, runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1"}})
    try:
        with tempfile.TemporaryDirectory() as tmp:
            sync = summarise(run_variant(base + " trainer.async_rollout=false", args.overlap_iterations, Path(tmp), 0))
            overlap = summarise(run_variant(base + " trainer.async_rollout=true", args.overlap_iterations, Path(tmp), 1))
    finally:
        ray.shutdown()
    return {"sync_wall_s": sync["time/wall"], "overlap_wall_s": overlap["time/wall"],
            "speedup": sync["time/wall"] / overlap["time/wall"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="tiny,smollm2", help="comma-separated: tiny, smollm2, or a model directory")
    parser.add_argument("--backends", default="hf,vllm", help="hf, vllm, vllm:nobind (threads not pinned to cores)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--batch", type=int, default=32, help="sequences per generate call")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--prompt-tokens", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds per backend (after one warm-up)")
    parser.add_argument("--sync-rounds", type=int, default=3, help="weight loads per backend (after one warm-up)")
    parser.add_argument("--sync-ray", action="store_true", help="also time object store → Ray actor → vLLM reload")
    parser.add_argument("--overlap", action="store_true", help="also time full runs with trainer.async_rollout=false/true")
    parser.add_argument("--overlap-iterations", type=int, default=6)
    args = parser.parse_args()
    args.backends = args.backends.split(",")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    results = {}
    load_before = os.getloadavg()[1]
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.models.split(","):
            path = _model_path(name, Path(scratch))
            results[name] = bench_model(name, path, args)
            if args.sync_ray and "vllm" in args.backends:
                results[name]["ray sync"] = bench_sync_ray(path, args)
            if args.overlap:
                results[name]["overlap"] = bench_overlap(path, args)

    print(f"\n{args.dtype}, {args.batch} sequences × {args.new_tokens} new tokens, {args.prompt_tokens}-token prompts, "
          f"{os.cpu_count()} cores, 5-min load average {load_before:.1f} → {os.getloadavg()[1]:.1f}; "
          f"median of {args.rounds} rounds (min–max); ratio = backend / HF\n")
    print("| model | backend | tokens/s | ratio | engine start (s) | load_weights (s) |")
    print("|---|---|---|---|---|---|")
    for name, per in results.items():
        base = per.get("hf", {}).get("tokens/s")
        for b in args.backends:
            r = per[b]
            ratio = f"{r['tokens/s'] / base:.2f}×" if base else "–"
            print(f"| {name} | {b} | {r['tokens/s']:.0f} ({r['min']:.0f}–{r['max']:.0f}) | {ratio} | "
                  f"{r['start_s']:.1f} | {r['load_weights_s']:.3f} |")
        if "ray sync" in per:
            s = per["ray sync"]
            print(f"| {name} | vLLM via Ray object store | – | – | – | {s['wall_s']:.3f} wall ({s['reload_s']:.3f} in actor, {s['mbytes']:.0f} MB) |")
    for name, per in results.items():
        if "overlap" in per:
            o = per["overlap"]
            line = o if isinstance(o, str) else (
                f"wall/iteration {o['sync_wall_s']:.2f} s → {o['overlap_wall_s']:.2f} s, speedup {o['speedup']:.2f}×")
            print(f"\noverlapped rollout (trainer.async_rollout), {name}: {line}")


if __name__ == "__main__":
    main()
