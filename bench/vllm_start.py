"""vLLM engine start-up against decoding speed: eager vs compiled (torch.compile), SmolLM2, default preset.

    python bench/vllm_start.py                      # eager, compiled (cold), compiled (warm compile cache)

Each variant runs in a fresh subprocess (vLLM binds the process's OpenMP threads), so every start is a
real one. The compile cache lives under CRLHF_CACHE/vllm; the "cold" variant points VLLM_CACHE_ROOT at an
empty directory, the "warm" one reuses it. Decoding is timed on batches of 16 and 64 chat prompts from
the embedded corpus with the default sampling (up to 20 new tokens); the first call of each size is
reported separately because it carries lazy allocations. Prints a Markdown table with ratios vs eager.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIZES = (16, 16, 64, 64)


def child(eager: bool) -> None:
    """Runs in the subprocess: start an engine, time it and a few generations, print one JSON line."""
    sys.path.insert(0, str(ROOT))
    import dataclasses

    import torch

    from services.data.dialogues import load_examples
    from services.models.loading import SMOLLM2, load_tokenizer, resolve_model_path
    from services.config.overrides import build_config
    from services.rollout.factory import engine_options
    from services.rollout.prompts import encode_prompts
    from services.rollout.vllm import VLLMBackend

    config = build_config([])
    path = resolve_model_path(SMOLLM2)
    options = dataclasses.replace(engine_options(config, path, torch.float32), enforce_eager=eager)
    start = time.perf_counter()
    backend = VLLMBackend(path, options)
    result: dict[str, float] = {"start": time.perf_counter() - start}
    tokenizer = load_tokenizer(path)
    contexts = [e.context for e in load_examples(config.data, "train")[: max(SIZES)]]
    prompts = encode_prompts(tokenizer, contexts, True, config.model.max_prompt_tokens)
    for i, size in enumerate(SIZES):
        start = time.perf_counter()
        backend.generate(prompts[:size], config.rollout.sampling, seed=i)
        result[f"gen{size}{'_first' if SIZES.index(size) == i else ''}"] = time.perf_counter() - start
    print("RESULT " + json.dumps(result), flush=True)


def run_variant(eager: bool, cache_root: str | None) -> dict[str, float]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if cache_root:
        env["VLLM_CACHE_ROOT"] = cache_root
    out = subprocess.run(
        [sys.executable, __file__, "--child", "eager" if eager else "compiled"], env=env, capture_output=True, text=True, check=True
    ).stdout
    return json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", choices=["eager", "compiled"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child == "eager")
        return
    with tempfile.TemporaryDirectory() as cold:
        results = {
            "eager": run_variant(True, None),
            "compiled, empty compile cache": run_variant(False, cold),
            "compiled, warm compile cache": run_variant(False, cold),
        }
    from phases import ratio_table  # bench/ is on sys.path when this runs as a script

    cols = ["start", "gen16_first", "gen16", "gen64_first", "gen64"]
    headers = ["engine start", "16 prompts, first", "16 prompts", "64 prompts, first", "64 prompts"]
    print("\nseconds (ratio vs eager)\n")
    print(ratio_table(list(results), list(results.values()), cols, headers, digits=1))


if __name__ == "__main__":
    main()
