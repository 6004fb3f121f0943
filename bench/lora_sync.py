"""LoRA weight sync into vLLM: merged weights (what crlhf does) vs the adapters themselves (vLLM's LoRA).

    python bench/lora_sync.py                    # default preset's shape: SmolLM2, r=16, 4 prompts × 4 × 20 tokens
    python bench/lora_sync.py --rounds 5 --new-tokens 40

Per round both variants see the same simulated update (the learner's adapters' B matrices move), then
sync it and generate one rollout of the default preset's shape:

- merged: `PolicyModels.policy_state(changed_only=True)` (W + ΔW of every adapted module, the learner side of
  `ObjectStoreWeightSync`), a pickle round trip standing in for the object store (Ray pickles tensors the
  same way), `VLLMBackend.load_weights` (the engine's `reload_weights`), then plain generation;
- adapters: the adapters written with peft's `save_pretrained` to /dev/shm (~20 MB), then generation with
  a new `LoRARequest` (vLLM `enable_lora`), whose first use loads the adapter.

Each variant runs in its own subprocess (vLLM binds the process's threads), rounds alternate A-B-A-B and
the first round of each (kernel compilation, allocation) is dropped; medians reported.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import pickle
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROMPT_TEXT = [
    "Hello, how are you today? I was wondering whether you could tell me something about the weather in spring.",
    "What is your favourite book, and why do you like it so much? I have been reading a lot of science fiction.",
    "Do you know anything about computers? Mine keeps crashing whenever I open more than three programs.",
    "Tell me a joke about cats. My sister says you know the best ones, and I need to cheer her up tonight.",
]


def worker(variant: str, args: argparse.Namespace, inbox: mp.Queue, outbox: mp.Queue) -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from services.config.schema import LoraConfig, ModelConfig, TrainerConfig
    from services.models.loading import SMOLLM2, resolve_model_path
    from services.ppo.policy import PolicyModels
    from services.rollout.vllm import EngineOptions, VLLMBackend, configure_environment

    configure_environment()
    from vllm import SamplingParams, TokensPrompt
    from vllm.lora.request import LoRARequest

    path = resolve_model_path(SMOLLM2)
    model = ModelConfig(name_or_path=path, dtype=args.dtype, lora=LoraConfig(r=args.rank, alpha=2.0 * args.rank))
    models = PolicyModels(model, TrainerConfig(mixed_precision="fp32"), num_streams=1, needs_critic=False)
    dtype = models.rollout_dtype if args.dtype == "auto" else getattr(torch, args.dtype)  # auto: what a run picks
    options = EngineOptions(dtype=dtype, max_model_len=512, max_num_seqs=16, enforce_eager=True)
    if variant == "merged":
        backend = VLLMBackend(path, options)
        llm = backend.llm
    else:  # the same engine settings plus LoRA slots; built directly, crlhf's backend has no LoRA path
        import vllm

        llm = vllm.LLM(model=path, dtype=str(dtype).removeprefix("torch."), max_model_len=512, max_num_seqs=16, enforce_eager=True,
                       kv_cache_memory_bytes=256 << 20, enable_lora=True, max_lora_rank=args.rank, max_loras=1)
    tokenizer = llm.get_tokenizer()
    prompts = [TokensPrompt(prompt_token_ids=tokenizer(tokenizer.apply_chat_template(
        [{"role": "user", "content": t}], add_generation_prompt=True, tokenize=False), add_special_tokens=False).input_ids)
               for t in PROMPT_TEXT for _ in range(4)]
    params = SamplingParams(max_tokens=args.new_tokens, min_tokens=args.new_tokens, temperature=1.0, seed=0)
    scratch = Path(tempfile.mkdtemp(dir="/dev/shm" if Path("/dev/shm").exists() else None))
    outbox.put("ready")
    while (msg := inbox.get()) != "stop":
        with torch.no_grad():  # a stand-in for an optimiser step: every adapter moves
            for name, p in models.policy.named_parameters():
                if "lora_B" in name:
                    p.add_(torch.randn_like(p) * 1e-3)
        start = time.perf_counter()
        if variant == "merged":
            state = models.policy_state(changed_only=True)
            state = pickle.loads(pickle.dumps(state, protocol=5))
            backend.load_weights(state)
            request = None
        else:
            models.policy.save_pretrained(scratch / f"v{msg}")
            request = LoRARequest(f"v{msg}", msg + 1, str(scratch / f"v{msg}"))
        synced = time.perf_counter()
        llm.generate(prompts, params, lora_request=request, use_tqdm=False)  # the adapter loads on first use
        done = time.perf_counter()
        outbox.put({"sync": synced - start, "generate": done - synced})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=4, help="rounds per variant, the first one dropped")
    parser.add_argument("--new-tokens", type=int, default=20)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"], help="engines' dtype (model.dtype)")
    args = parser.parse_args()
    ctx = mp.get_context("spawn")
    variants = ["merged", "adapters"]
    queues = {v: (ctx.Queue(), ctx.Queue()) for v in variants}
    procs = {v: ctx.Process(target=worker, args=(v, args, *queues[v]), daemon=True) for v in variants}
    for v in variants:
        procs[v].start()
        assert queues[v][1].get(timeout=600) == "ready"
    results: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
    for r in range(args.rounds):
        for v in variants:
            queues[v][0].put(r)
            results[v].append(queues[v][1].get(timeout=600))
    for v in variants:
        queues[v][0].put("stop")
        procs[v].join(timeout=60)
    med = {v: {k: statistics.median(x[k] for x in results[v][1:]) for k in ("sync", "generate")} for v in variants}
    print(f"engine dtype: {args.dtype}")
    print(f"| variant | sync | generate ({len(PROMPT_TEXT) * 4} × {args.new_tokens} tokens) | sync + generate |")
    print("|---|---:|---:|---:|")
    base = med["merged"]["sync"] + med["merged"]["generate"]
    for v in variants:
        total = med[v]["sync"] + med[v]["generate"]
        print(f"| {v} | {med[v]['sync']:.2f} s | {med[v]['generate']:.2f} s | {total:.2f} s ({total / base:.2f}×) |")


if __name__ == "__main__":
    main()
