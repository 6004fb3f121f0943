"""TRL's GRPOTrainer on the work bench/peers.py prepared — runs in TRL's own virtual environment.

    .venv-trl/bin/python bench/peers_trl.py --work WORK.jsonl --model DIR --out RESULT.json [options]

Reads prompts (chat messages) and references in the order crlhf's sampler draws them, trains with LoRA and
the same sampling, K, completion length, learning rate, KL coefficient and optimizer steps per generation
batch, scores METEOR against the reference exactly as crlhf's reward does (nltk `single_meteor_score` over
`word_tokenize(preserve_line=True)` tokens), and writes timings, the reward of every generation batch and the
peak RSS of this process. Generation is Hugging Face `generate` (TRL's vLLM path needs a CUDA vLLM).
"""

from __future__ import annotations

import argparse
import json
import resource
import time

T0 = time.perf_counter()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--work", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--iterations", type=int, required=True, help="generation batches (crlhf iterations)")
    p.add_argument("--prompts", type=int, default=4, help="prompts per generation batch")
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=20)
    p.add_argument("--top-k", type=int, default=20)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--beta", type=float, default=0.2)
    p.add_argument("--epochs", type=int, default=2, help="passes over each generation batch (TRL num_iterations)")
    p.add_argument("--minibatch", type=int, default=8, help="completions per optimizer step")
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--lora-alpha", type=float, default=32.0)
    p.add_argument("--bf16", action="store_true")
    args = p.parse_args()

    import torch
    from datasets import Dataset
    from nltk.tokenize import word_tokenize
    from nltk.translate.meteor_score import single_meteor_score
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    torch.manual_seed(0)
    rows = [json.loads(line) for line in open(args.work)]
    dataset = Dataset.from_list([{"prompt": r["messages"], "reference": r["reference"]} for r in rows])
    rewards: list[float] = []

    def meteor(completions, reference, **_):
        out = []
        for completion, ref in zip(completions, reference):
            text = completion[0]["content"] if isinstance(completion, list) else completion
            out.append(single_meteor_score(word_tokenize(ref, preserve_line=True), word_tokenize(text.strip(), preserve_line=True)))
        rewards.extend(out)
        return out

    generation = args.prompts * args.k
    config = GRPOConfig(
        output_dir="/tmp/peers-trl-out",
        per_device_train_batch_size=args.minibatch,
        num_generations=args.k,
        generation_batch_size=generation,
        num_iterations=args.epochs,
        max_completion_length=args.max_new_tokens,
        temperature=1.0,
        top_k=args.top_k,
        top_p=1.0,
        learning_rate=args.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        beta=args.beta,
        max_steps=args.iterations * (generation // args.minibatch) * args.epochs,
        shuffle_dataset=False,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        bf16=args.bf16,
        seed=0,
        generation_kwargs={"min_new_tokens": 2},
    )
    steps: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, *_, **__):
            steps.append(time.perf_counter())

    trainer = GRPOTrainer(
        model=args.model,
        reward_funcs=meteor,
        args=config,
        train_dataset=dataset,
        peft_config=LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=0.0, target_modules="all-linear"),
        callbacks=[Clock()],
    )
    start = time.perf_counter()
    trainer.train()
    end = time.perf_counter()
    per_generation = [sum(rewards[i : i + generation]) / generation for i in range(0, len(rewards), generation)]
    json.dump({
        "wall_seconds": end - T0,
        "train_seconds": end - start,
        "completions": len(rewards),
        "optimizer_steps": len(steps),
        "step_end_seconds": [t - start for t in steps],  # per optimizer step, from the start of training
        "reward_per_iteration": per_generation,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }, open(args.out, "w"), indent=1)


if __name__ == "__main__":
    main()
