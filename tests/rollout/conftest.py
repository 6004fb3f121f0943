"""Fixtures for the rollout tests (helpers in helpers.py)."""

from __future__ import annotations

import pytest

from services.models.loading import SMOLLM2, TINY, load_tokenizer, resolve_model_path

from .helpers import CHAT_QUESTIONS, build_tiny_vllm_model


@pytest.fixture(scope="session")
def smollm2_path() -> str:
    return resolve_model_path(SMOLLM2)


@pytest.fixture(scope="session")
def tiny_path() -> str:
    return resolve_model_path(TINY)


@pytest.fixture(scope="session")
def tiny_vllm_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(build_tiny_vllm_model(tmp_path_factory.mktemp("models") / "tiny-llama-hd32"))


@pytest.fixture(scope="session")
def chat_prompts(smollm2_path: str) -> list[list[int]]:
    """Real chat-formatted prompts (SmolLM2's template), encoded the way the rollout actor encodes them."""
    from services.rollout.prompts import encode_prompts

    tokenizer = load_tokenizer(smollm2_path)
    return encode_prompts(tokenizer, [(q,) for q in CHAT_QUESTIONS], use_chat_template=True, max_tokens=64)


