"""The learner's train phase alone (no Ray, no rollout): one PPO update on a fixed batch, per variant.

    python bench/learner_step.py                                    # default preset: float32 vs bf16 autocast
    python bench/learner_step.py --variant "trainer.mixed_precision=fp32" --variant "trainer.epochs=1" --repeats 2

Each variant builds a `PPOLearner` from the config the overrides give (default preset unless they say
otherwise) and times `train()` on the same batch: real chatterbot prompts through the chat template,
responses sampled by the model itself. The first update (AdamW allocates its state) is excluded; the
table gives the median of the rest, split into forward passes, backward passes and optimiser steps, with
ratios against the first variant. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

DEFAULT_VARIANTS = ["trainer.mixed_precision=fp32", "trainer.mixed_precision=bf16"]
PARTS = ["total", "forward", "backward", "optimizer"]


def rollout_batch(config: Any) -> tuple[list[list[int]], list[list[int]]]:
    """A batch of the configured size from the real dataset, sampled by the model in float32 with HF."""
    import torch

    from services.data.dialogues import load_examples
    from services.models.loading import load_causal_lm, load_tokenizer
    from services.rollout.hf import HFBackend
    from services.rollout.prompts import encode_prompts

    tokenizer = load_tokenizer(config.model.name_or_path)
    examples = load_examples(config.data, "train")[: config.rollout.batch_size]
    prompts = encode_prompts(tokenizer, [e.context for e in examples], config.model.use_chat_template, config.model.max_prompt_tokens)
    model = load_causal_lm(config.model.name_or_path, torch.float32, torch.device("cpu"))
    generation = HFBackend(model, tokenizer).generate(prompts, config.rollout.sampling, seed=0)
    return generation.prompt_ids, generation.response_ids


def timed(totals: dict[str, float], part: str, fn: Callable) -> Callable:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            totals[part] += time.perf_counter() - start

    return wrapper


def measure(overrides: str, batch: tuple[list[list[int]], list[list[int]]], repeats: int) -> dict[str, float]:
    import torch

    from services.models.loading import load_tokenizer
    from services.objectives.registry import build_objective
    from services.config.overrides import build_config
    from services.ppo.learner import PPOLearner

    config = build_config(overrides.split())
    objective = build_objective(config.objective, config.rewards)
    learner = PPOLearner(config.model, config.trainer, len(objective.stream_names), load_tokenizer(config.model.name_or_path).pad_token_id)
    scores = torch.rand(len(batch[0]), len(config.rewards), generator=torch.Generator().manual_seed(0))
    totals: dict[str, float] = defaultdict(float)
    # Instrument this learner only; Tensor.backward is global, so it is restored afterwards.
    learner._logprobs = timed(totals, "forward", learner._logprobs)
    learner._values = timed(totals, "forward", learner._values)
    learner.optimizer.step = timed(totals, "optimizer", learner.optimizer.step)
    backward = torch.Tensor.backward
    torch.Tensor.backward = timed(totals, "backward", backward)
    samples: dict[str, list[float]] = defaultdict(list)
    try:
        for repeat in range(repeats + 1):
            totals.clear()
            start = time.perf_counter()
            learner.train(*batch, scores, objective)
            totals["total"] = time.perf_counter() - start
            if repeat:  # the first update allocates AdamW's state
                for part in PARTS:
                    samples[part].append(totals[part])
    finally:
        torch.Tensor.backward = backward
    return {part: statistics.median(values) for part, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", action="append", help="space-separated overrides; repeatable")
    parser.add_argument("--repeats", type=int, default=3, help="timed updates per variant (after one warm-up)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from phases import ratio_table  # bench/ is on sys.path when this runs as a script
    from services.config.overrides import build_config

    torch.set_num_threads(os.cpu_count() or 1)
    variants = args.variant or DEFAULT_VARIANTS
    batch = rollout_batch(build_config(variants[0].split()))
    tokens = sum(map(len, batch[1]))
    results = [measure(v, batch, args.repeats) for v in variants]
    print(f"\none PPO update on {len(batch[0])} episodes ({tokens} response tokens); median of {args.repeats} "
          "after a warm-up; seconds (ratio vs first variant)\n")
    print(ratio_table([f"`{v}`" for v in variants], results, PARTS, PARTS, digits=1))


if __name__ == "__main__":
    main()
