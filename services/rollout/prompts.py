"""Dialogue context → prompt token ids."""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase

EOU = " <EOU> "


def encode_prompts(
    tokenizer: PreTrainedTokenizerBase, contexts: list[tuple[str, ...]], use_chat_template: bool, max_tokens: int
) -> list[list[int]]:
    """Chat models see the turns as alternating user/assistant messages ending with the user;
    other models see the turns joined by <EOU>, as RL4LMs does. Left-truncated to `max_tokens`."""
    chat = use_chat_template and tokenizer.chat_template is not None
    encoded = []
    for turns in contexts:
        if chat:
            n = len(turns)
            messages = [{"role": "user" if (n - i) % 2 == 1 else "assistant", "content": t} for i, t in enumerate(turns)]
            ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
            if not isinstance(ids, list):  # BatchEncoding in transformers 5
                ids = ids["input_ids"]
        else:
            ids = tokenizer(EOU.join(turns) + EOU, add_special_tokens=True)["input_ids"]
        encoded.append(list(ids[-max_tokens:]))
    return encoded
