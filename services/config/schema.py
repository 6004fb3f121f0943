"""Typed run configuration.

Every section is a pydantic model with `extra="forbid"`, so a misspelt key is an error. Command-line
`key=value` overrides are applied by `services.config.overrides`; this module only defines the schema and the
cross-field checks that must pass before any actor starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, SerializeAsAny, field_validator, model_validator

from services.config.run_root import absolute, default_runs_root
from services.objectives.options import ObjectiveConfig
from services.objectives.registry import objective_config_from_dict
from services.rewards.config import RewardConfig


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class LoraConfig(Section):
    r: int = Field(16, gt=0, description="Rank of each adapter (ΔW = B·A with A: r × in, B: out × r).")
    alpha: float = Field(32.0, gt=0.0, description="Scale: ΔW is multiplied by alpha / r.")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout on the adapters' input (only active in training mode).")
    target_modules: list[str] | None = Field(
        None,
        description="Module names to adapt; None = the attention and MLP projections present in the model "
        "(q/k/v/o_proj, gate/up/down_proj for Llama/Qwen/Mistral; c_attn, c_proj, c_fc for GPT-2).",
    )


class ModelConfig(Section):
    name_or_path: str = Field(
        "smollm2-135m-instruct",
        description="Hugging Face causal LM: a local directory, a hub id (needs network), or one of the "
        "embedded names 'smollm2-135m-instruct' (real pretrained, offline) and 'tiny-llama' (random, tiny).",
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="'auto' = bfloat16 on a GPU that supports it, float32 on CPU."
    )
    use_chat_template: bool = Field(True, description="Format prompts with the tokenizer's chat template when it has one.")
    max_prompt_tokens: int = Field(256, gt=0, description="Prompts are left-truncated to this many tokens.")
    lora: LoraConfig | None = Field(
        None,
        description="Train LoRA adapters (peft) instead of every weight: the reference is the base model with the "
        "adapters disabled (no second copy), checkpoints hold only the adapters. null = full fine-tuning.",
    )


class DataConfig(Section):
    source: str = Field(
        "chatterbot",
        description="'chatterbot' (embedded English corpus), a local .json/.jsonl/.parquet/.csv file, "
        "or a `datasets` name (needs network unless cached).",
    )
    subset: str | None = Field(None, description="`datasets` configuration name, if any.")
    train_split: str = Field("train", description="Split used for training prompts.")
    eval_split: str | None = Field(
        None, description="Held-out split; None = carve `eval_fraction` out of the training split."
    )
    eval_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    context_column: str = Field("context", description="Column with the dialogue context (a list of turns or a string).")
    reference_column: str | None = Field("reference", description="Column with the reference response.")
    label_column: str | None = Field("label", description="Column with a class label (used by classifier rewards).")
    context_turns: int = Field(5, gt=0, description="Keep the last N turns of the context.")
    turn_separator: str = Field(
        "<EOU>",
        min_length=1,
        description="Splits a string context into turns (each turn is stripped, so ' <EOU> ' splits the same): "
        "'<EOU>' (RL4LMs), '__eou__' (DailyDialog), or 'newline' (also '\\n') for one turn per line.",
    )
    drop_empty: bool = Field(
        False, description="Drop rows with an empty context, reference or label (counted in a warning) instead of refusing the file."
    )
    categories: list[str] | None = Field(None, description="chatterbot only: topic categories to use (None = all).")
    max_examples: int | None = Field(None, gt=0, description="Cap on the number of examples loaded.")
    seed: int = 0

    @field_validator("turn_separator")
    @classmethod
    def _separator_alias(cls, v: str) -> str:
        # A newline cannot be typed into a key=value override, so it has names.
        return "\n" if v in ("newline", "\\n") else v


class SamplingConfig(Section):
    max_new_tokens: int = Field(20, gt=0)
    min_new_tokens: int = Field(2, ge=0)
    temperature: float = Field(1.0, gt=0.0)
    top_k: int = Field(20, ge=0, description="0 disables top-k.")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    stop: list[str] = Field(default_factory=list, description="Stop strings.")

    @model_validator(mode="after")
    def _min_le_max(self) -> "SamplingConfig":
        if self.min_new_tokens > self.max_new_tokens:
            raise ValueError(
                f"min_new_tokens ({self.min_new_tokens}) exceeds max_new_tokens ({self.max_new_tokens})"
            )
        return self


class RolloutConfig(Section):
    backend: Literal["auto", "hf", "vllm"] = Field("auto", description="'auto' = vLLM when installed and usable, else HF.")
    num_actors: int = Field(1, gt=0, description="Rollout actors; each generates a shard of every batch.")
    num_cpus: float = Field(1.0, ge=0.0)
    num_gpus: float = Field(0.0, ge=0.0)
    batch_size: int = Field(32, gt=0, description="Prompts per iteration; each gets samples_per_prompt completions (episodes).")
    samples_per_prompt: int = Field(
        1, gt=0, description="Completions K sampled per prompt; the group estimators (trainer.advantage=grpo|rloo) need K ≥ 2."
    )
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    gpu_memory_utilization: float = Field(0.3, gt=0.0, le=1.0, description="vLLM only.")
    tensor_parallel_size: int = Field(1, gt=0, description="vLLM only.")
    enforce_eager: bool | None = Field(
        None,
        description="vLLM only: skip torch.compile and CUDA graphs. None = eager on CPU (compiling SmolLM2 there costs "
        "64-100 s per engine start for 0-18% faster decoding), compiled on GPU.",
    )


def default_rewards() -> dict[str, RewardConfig]:
    return {
        "meteor": RewardConfig(kind="meteor", weight=0.5, threshold=0.23, actor=0),
        "topic": RewardConfig(kind="classifier", weight=1.0, threshold=0.48, actor=1),
    }


class RewardActorsConfig(Section):
    num_actors: int | None = Field(None, description="None = one per distinct `rewards.*.actor` index.")
    num_cpus: float = Field(0.25, ge=0.0)
    num_gpus: float = Field(0.0, ge=0.0)


class LearnerConfig(Section):
    num_cpus: float = Field(1.0, ge=0.0)
    num_gpus: float = Field(0.0, ge=0.0)
    torch_threads: int | None = Field(None, gt=0, description="None = all cores Ray gives this node.")


class TrainerConfig(Section):
    iterations: int = Field(50, gt=0)
    epochs: int = Field(5, gt=0, description="PPO epochs L over each rollout.")
    minibatch_size: int = Field(64, gt=0, description="Tokens (or sequences, see minibatch_unit) per PPO minibatch.")
    minibatch_unit: Literal["token", "sequence"] = Field(
        "token", description="'token' mixes tokens of different episodes, as RL4LMs does; 'sequence' keeps episodes whole."
    )
    learning_rate: float = Field(1e-6, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    gamma: float = Field(0.99, ge=0.0, le=1.0)
    gae_lambda: float = Field(0.95, ge=0.0, le=1.0)
    advantage: Literal["gae", "grpo", "rloo"] = Field(
        "gae",
        description="Advantage estimator: 'gae' (per-stream value heads, a critic), or the critic-free group baselines "
        "'grpo' ((R − mean)/std within each prompt's K completions) and 'rloo' (leave-one-out mean), per reward stream. "
        "No value model is built for grpo/rloo.",
    )
    group_std_floor: float = Field(
        0.01, gt=0.0,
        description="grpo: the group std is floored at this, so near-identical completions do not amplify noise.",
    )
    clip_range: float = Field(0.2, gt=0.0)
    max_grad_norm: float = Field(0.5, gt=0.0)
    seed: int = 0
    log_every: int = Field(1, gt=0)
    async_rollout: bool = Field(
        False,
        description="Overlap generation of iteration k+1 with training on iteration k: the batch trained at k+1 was "
        "sampled by the policy one update earlier, corrected with decoupled PPO (clipped ratio π_θ/π_prox, each token's "
        "loss × min(π_prox/π_behaviour, async_is_cap)). Periodic checkpoints are drain points (no prefetch across them); "
        "an in-flight prefetch is discarded at a requested checkpoint or stop. Not for objective=l3m.",
    )
    async_is_cap: float = Field(
        2.0, gt=0.0, description="Truncation c of the off-policy importance weight min(π_prox/π_behaviour, c) (async_rollout)."
    )
    mixed_precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto",
        description="Learner compute precision. The trained weights and AdamW state are always float32 (a 1e-6 "
        "step is below bfloat16's resolution); 'bf16' runs forward/backward under bfloat16 autocast; 'auto' = bf16 "
        "where the device computes bfloat16 natively (a bf16 GPU, a CPU with AVX512-BF16 or AMX), else 'fp32'.",
    )


class EvaluationConfig(Section):
    every: int = Field(5, ge=0, description="Evaluate the policy on the held-out split before every N-th update (0 = never).")
    max_examples: int | None = Field(
        None, gt=0, description="Evaluate on the first N held-out examples; None = the full split (diversity counts depend on its size)."
    )
    score: str = Field(
        "a1",
        description="eval_score: 'a1' (paper 000 A.1), 'fast_rl' (paper 001's six-term variant), or a reward name (gold metric).",
    )
    bounds: dict[str, tuple[float, float]] = Field(
        default_factory=dict, description="Per-metric (min, max) normalisation bounds replacing the preset ones."
    )
    seed: int = Field(1234, description="Sampling seed of every evaluation, so evaluations differ only by the policy.")


class CheckpointConfig(Section):
    every: int = Field(10, ge=0, description="Save every N iterations (0 = only at the end).")
    keep_last: int = Field(2, gt=0, description="Older checkpoints are deleted.")
    export_dtype: Literal["bfloat16", "float32", "engines"] = Field(
        "bfloat16",
        description="dtype of the standalone model written once at the end to <run dir>/final (LoRA merged in): "
        "bfloat16 halves its size (how most hub models ship); 'engines' = the rollout engines' dtype (model.dtype).",
    )


class ControlConfig(Section):
    host: str = Field("127.0.0.1", description="Control plane bind address (loopback by default; 0.0.0.0 exposes it).")
    port: int = Field(8321, ge=0, le=65535, description="0 = pick a free port.")
    enabled: bool = True
    nice: int = Field(
        0, ge=0, le=19,
        description="Nice value of the control plane's threads (Linux, per thread): > 0 yields CPU to training on a "
        "node where both share cores, at some cost in request latency.",
    )
    token: SecretStr | None = Field(
        None,
        exclude=True,  # never written to config.yaml
        description="Bearer token for changing endpoints; None = env CRLHF_CONTROL_TOKEN, else a generated one "
        "written to <run dir>/control.token (mode 0600).",
    )

    @model_validator(mode="after")
    def _token_strength(self) -> "ControlConfig":
        # A model-level check, so the error message never echoes the token itself.
        if self.token is not None:
            value = self.token.get_secret_value()
            if len(value) < 16 or any(c.isspace() for c in value):
                raise ValueError("token: must be at least 16 characters without whitespace")
        return self


class RunConfig(Section):
    root: Path = Field(
        default_factory=default_runs_root,
        description="Runs are created under this directory (made absolute). Default: $CRLHF_RUNS if set; "
        "~/crlhf-runs inside Ray's temporary working directory (ray job submit --working-dir), which Ray deletes; "
        "else ./runs.",
    )
    name: str | None = Field(None, description="Run directory name; None = '<objective>-<timestamp>'.")
    storage: str | None = Field(
        None,
        description="Durable copy of the run directory (checkpoints, metrics, audit log, report, final model — never "
        "the control token), refreshed after every checkpoint and at the end: an s3://, gs://, hdfs:// or file:// URI "
        "(pyarrow.fs), or an absolute path on a shared filesystem. The run is written to <storage>/<run name>.",
    )
    ray_address: str | None = Field(None, description="Ray cluster to join; None = join a running one if any, else start a local one.")
    actor_start_timeout_s: float = Field(
        60.0, gt=0.0,
        description="An actor still waiting for resources (PENDING_CREATION) after this many seconds stops the run with a "
        "message naming the actor and what it asked for; meanwhile /v1/status says 'waiting for resources'.",
    )

    @field_validator("storage")
    @classmethod
    def _storage_uri(cls, v: str | None) -> str | None:
        from services.run.storage import check_uri

        return None if v is None else check_uri(v)

    @field_validator("root")
    @classmethod
    def _absolute_root(cls, v: Path) -> Path:
        # A relative root would follow the process's cwd, e.g. into Ray's temporary working directory.
        return absolute(v)


class PlacementConfig(Section):
    """Custom Ray resources each actor group asks for, beside its CPUs/GPUs: start nodes with matching
    `ray start --resources='{"node_rollout": 1}'` and the group lands on them (docs/OPERATIONS.md)."""

    rollout: dict[str, float] = Field(default_factory=dict, description="e.g. {node_rollout: 1} per rollout actor.")
    reward: dict[str, float] = Field(default_factory=dict, description="e.g. {node_reward: 1} per reward actor.")
    learner: dict[str, float] = Field(default_factory=dict, description="e.g. {node_learner: 1} for the learner.")


class FaultConfig(Section):
    """What a run does when something breaks mid-run (docs/RELIABILITY.md)."""

    max_retries: int = Field(
        3, ge=0,
        description="A lost rollout/reward actor (restarted by Ray) or a lost learner (rolled back to the last checkpoint): "
        "the iteration is re-run up to this many times in a row; a fault that repeats ends the run with a resumable checkpoint.",
    )
    actor_restarts: int = Field(3, ge=0, description="Ray max_restarts of the rollout, reward and learner actors.")
    restart_timeout_s: float = Field(
        300.0, gt=0.0, description="How long a recovery waits for a restarted actor to be back (its constructor loads models).",
    )
    reward_on_error: Literal["fail", "skip"] = Field(
        "fail",
        description="Also spelt rewards.on_error. A reward that raises or gives NaN/inf for a sample: 'fail' stops the run "
        "naming the reward, iteration and sample; 'skip' drops those samples from the update (counted in rewards/skipped).",
    )


class RootConfig(Section):
    preset: Literal["default", "smoke", "paper", "gpu"] = Field(
        "default",
        description="Bundle of settings applied before overrides: default (CPU laptop, SmolLM2), smoke (tiny model), "
        "paper (paper 000's hyperparameters, for GPU clusters), gpu (Qwen2.5-0.5B + vLLM on 2 GPUs, NCCL weight sync).",
    )
    objective: SerializeAsAny[ObjectiveConfig] = Field(
        default_factory=lambda: objective_config_from_dict({"name": "ppo"}),
        description="Training objective; `objective=NAME` selects one, `objective.KEY=VALUE` sets its options.",
    )
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    rewards: dict[str, RewardConfig] = Field(default_factory=default_rewards)
    reward_actors: RewardActorsConfig = Field(default_factory=RewardActorsConfig)
    learner: LearnerConfig = Field(default_factory=LearnerConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    control: ControlConfig = Field(default_factory=ControlConfig)
    run: RunConfig = Field(default_factory=RunConfig)
    fault: FaultConfig = Field(default_factory=FaultConfig)
    placement: PlacementConfig = Field(default_factory=PlacementConfig)
    resume: bool | str = Field(False, description="true = resume the run named by run.name; or a run directory path.")

    @model_validator(mode="before")
    @classmethod
    def _rewards_on_error(cls, data: Any) -> Any:
        # `rewards.on_error` sits among the reward names (as the issue and users spell it); it is stored as
        # fault.reward_on_error so the rewards mapping stays name -> RewardConfig.
        rewards = data.get("rewards") if isinstance(data, dict) else None
        if isinstance(rewards, dict) and "on_error" in rewards:
            data = {**data, "rewards": {k: v for k, v in rewards.items() if k != "on_error"}}
            fault = data.get("fault")
            data["fault"] = {**(fault.model_dump() if isinstance(fault, BaseModel) else fault or {}), "reward_on_error": rewards["on_error"]}
        return data

    @field_validator("objective", mode="before")
    @classmethod
    def _dispatch_objective(cls, v: Any) -> Any:
        if isinstance(v, ObjectiveConfig):
            return v
        if isinstance(v, str):
            v = {"name": v}
        return objective_config_from_dict(v)

    @model_validator(mode="after")
    def _cross_checks(self) -> "RootConfig":
        from services.rewards.registry import validate_reward_params

        if not self.rewards:
            raise ValueError("rewards: at least one reward is required")
        for name, reward in self.rewards.items():
            try:
                validate_reward_params(reward.kind, reward.params)
            except ValueError as err:
                raise ValueError(f"rewards.{name}: {err}") from None
        self.objective.validate_rewards(self.rewards)
        auto = [n for n, r in self.rewards.items() if r.threshold == "auto"]
        if auto and self.data.eval_split is None and self.data.eval_fraction == 0:
            raise ValueError(
                f"rewards.{auto[0]}.threshold=auto measures the untrained policy on held-out data, and there is none: "
                "set data.eval_fraction (e.g. 0.1) or data.eval_split"
            )
        # l3m takes SFT and log-barrier steps, never advantage steps: any estimator is accepted and unused, so
        # `objective=l3m` runs on the default preset (GRPO) as it is.
        if self.trainer.advantage != "gae" and self.objective.name != "l3m":
            if self.rollout.samples_per_prompt < 2:
                raise ValueError(
                    f"trainer.advantage={self.trainer.advantage} baselines each completion against the other completions "
                    f"of its prompt: set rollout.samples_per_prompt to 2 or more (it is {self.rollout.samples_per_prompt})"
                )
        if self.trainer.async_rollout and self.objective.name == "l3m":
            raise ValueError("trainer.async_rollout: objective l3m has no importance ratio to correct stale samples; set it to false")
        self.objective.complete(self)
        if self.evaluation.score not in ("a1", "fast_rl", *self.rewards):
            raise ValueError(
                f"evaluation.score: '{self.evaluation.score}' is neither 'a1', 'fast_rl' nor a reward name ({', '.join(self.rewards)})"
            )
        return self

    def reward_names(self) -> list[str]:
        """Reward names in a fixed order: the column order of every score matrix [B, N]."""
        return list(self.rewards)
