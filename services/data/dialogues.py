"""Dialogue prompts: loading (chatterbot corpus, local files, `datasets` names) and deterministic sampling.

Every source becomes a list of `DialogueExample`s (context turns, reference response, class label). When no
named eval split exists, the eval split is carved out by hashing each dialogue's first turn, so all examples of
one dialogue — and identical openings across dialogues — fall on the same side: eval contexts are unseen in
training, and the split does not change when `categories` or `max_examples` do.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import yaml

from services.config.names import unknown_name_message

if TYPE_CHECKING:
    from datasets import Dataset

    from services.config.schema import DataConfig

log = logging.getLogger(__name__)

CHATTERBOT = "chatterbot"
LOCAL_FORMATS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}
TURN_SEPARATOR = "<EOU>"  # RL4LMs/DailyDialog end-of-utterance marker in string contexts


class DataError(ValueError):
    """A dataset that cannot be used as configured: bad row, missing column, unknown split or category."""


@dataclass(frozen=True)
class DialogueExample:
    context: tuple[str, ...]  # turns before the response, oldest first
    reference: str | None
    label: str | None


def load_examples(cfg: DataConfig, split: Literal["train", "eval"]) -> list[DialogueExample]:
    """The examples of one split, in source order.

    eval = `cfg.eval_split` when set (then `eval_fraction` is unused), else the hashed `eval_fraction` of the
    train split's dialogues. `max_examples` caps the returned split with a seeded subset.
    """
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    if cfg.source == CHATTERBOT:
        examples = _carve(_chatterbot_examples(cfg), cfg, split)
    elif cfg.eval_split is not None:
        examples = [ex for _, ex in _dataset_examples(cfg, cfg.train_split if split == "train" else cfg.eval_split)]
    else:
        examples = _carve(_dataset_examples(cfg, cfg.train_split), cfg, split)
    if not examples:
        raise DataError(f"data source '{cfg.source}' gave no {split} examples (eval_fraction={cfg.eval_fraction})")
    return _cap(examples, cfg.max_examples, cfg.seed)


# --- splitting ------------------------------------------------------------------------------------------------


def _in_eval(group_key: str, seed: int, fraction: float) -> bool:
    digest = hashlib.blake2b(f"{seed}\0{group_key.casefold().strip()}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < fraction


def _carve(keyed: list[tuple[str, DialogueExample]], cfg: DataConfig, split: str) -> list[DialogueExample]:
    if split == "eval" and cfg.eval_fraction == 0.0:
        raise DataError("no eval split: set data.eval_fraction > 0 or data.eval_split")
    want_eval = split == "eval"
    return [ex for key, ex in keyed if _in_eval(key, cfg.seed, cfg.eval_fraction) == want_eval]


def _rng(*keys: int) -> np.random.Generator:
    return np.random.default_rng([k % 2**64 for k in keys])  # SeedSequence rejects negative seeds


def _cap(examples: list[DialogueExample], max_examples: int | None, seed: int) -> list[DialogueExample]:
    """A seeded subset in original order, so a cap does not keep only the first category or file."""
    if max_examples is None or len(examples) <= max_examples:
        return examples
    keep = np.sort(_rng(seed).choice(len(examples), size=max_examples, replace=False))
    return [examples[i] for i in keep]


# --- chatterbot -----------------------------------------------------------------------------------------------


def chatterbot_dir() -> Path:
    try:
        root = resources.files("chatterbot_corpus")
    except ModuleNotFoundError:
        raise DataError(
            "data.source=chatterbot needs the package 'chatterbot-corpus' (pip install chatterbot-corpus==1.3.3)"
        ) from None
    return Path(str(root)) / "data" / "english"


def _chatterbot_examples(cfg: DataConfig) -> list[tuple[str, DialogueExample]]:
    if cfg.eval_split is not None or cfg.train_split != "train" or cfg.subset is not None:
        raise DataError("data.source=chatterbot has no named splits or subsets: use data.eval_fraction")
    files = sorted(chatterbot_dir().glob("*.yml"))
    if not files:
        raise DataError(f"no chatterbot YAML files in {chatterbot_dir()}; reinstall chatterbot-corpus")
    docs = [(path, yaml.safe_load(path.read_text(encoding="utf-8"))) for path in files]
    available = sorted({c for _, doc in docs for c in doc["categories"]})
    for name in cfg.categories or []:
        if name not in available:
            raise DataError(unknown_name_message("chatterbot category", name, available))
    wanted = set(cfg.categories or available)
    keyed: list[tuple[str, DialogueExample]] = []
    for path, doc in docs:
        if not wanted.intersection(doc["categories"]):
            continue
        label = str(doc["categories"][0])
        for k, conversation in enumerate(doc["conversations"]):
            if not _is_dialogue(conversation):
                # The packaged corpus has a malformed entry (trivia.yml #13 is one string); users cannot fix it,
                # so it is no warning of theirs: train.log only.
                log.info(
                    "chatterbot %s conversation %d is not a list of turns, skipped: %r",
                    path.name,
                    k,
                    conversation,
                )
                continue
            turns = [t.strip() for t in conversation]
            for i in range(1, len(turns)):
                context = tuple(turns[max(0, i - cfg.context_turns) : i])
                keyed.append((turns[0], DialogueExample(context=context, reference=turns[i], label=label)))
    return keyed


def _is_dialogue(conversation: Any) -> bool:
    return (
        isinstance(conversation, list)
        and len(conversation) >= 2
        and all(isinstance(turn, str) and turn.strip() for turn in conversation)
    )


# --- files and `datasets` names -------------------------------------------------------------------------------


def _dataset_examples(cfg: DataConfig, split_name: str) -> list[tuple[str, DialogueExample]]:
    dataset = _load_split(cfg, split_name)
    where = f"{cfg.source} [{split_name}]"
    columns = {"context": cfg.context_column, "reference": cfg.reference_column, "label": cfg.label_column}
    for role, column in columns.items():
        if column is not None and column not in dataset.column_names:
            disable = f"; set data.{role}_column=null to go without" if role != "context" else ""
            raise DataError(
                f"{where}: {role} column '{column}' not found (available: {', '.join(dataset.column_names)}){disable}"
            )
    contexts = dataset[cfg.context_column]
    references = dataset[cfg.reference_column] if cfg.reference_column else [None] * len(contexts)
    labels = dataset[cfg.label_column] if cfg.label_column else [None] * len(contexts)
    keyed = []
    for row, (raw_context, raw_reference, raw_label) in enumerate(zip(contexts, references, labels)):
        at = f"{where} row {row}, column"
        turns = _parse_context(raw_context, f"{at} '{cfg.context_column}'")
        reference = label = None
        if cfg.reference_column is not None:
            reference = _parse_reference(raw_reference, f"{at} '{cfg.reference_column}'")
        if cfg.label_column is not None:
            label = _parse_label(raw_label, f"{at} '{cfg.label_column}'")
        example = DialogueExample(context=turns[-cfg.context_turns :], reference=reference, label=label)
        keyed.append((turns[0], example))
    return keyed


def _load_split(cfg: DataConfig, split_name: str) -> Dataset:
    from datasets import load_dataset

    path = Path(cfg.source).expanduser()
    local_format = LOCAL_FORMATS.get(path.suffix.lower())
    if local_format is not None:
        if not path.is_file():
            raise DataError(f"data file not found: {path}")
        if cfg.subset is not None:
            raise DataError(f"data.subset applies to `datasets` names, not to the local file {path}")
        splits = load_dataset(local_format, data_files={"train": str(path)})
    else:
        try:
            splits = load_dataset(cfg.source, cfg.subset)
        except Exception as err:  # datasets raises many types; all mean "cannot use this source"
            raise DataError(
                f"cannot load dataset '{cfg.source}' (subset {cfg.subset!r}): {err}. Hub datasets need network "
                "access unless cached; local files must end in " + "/".join(LOCAL_FORMATS)
            ) from err
    if split_name not in splits:
        raise DataError(f"{cfg.source}: no split '{split_name}' (available: {', '.join(splits)})")
    return splits[split_name]


def _parse_context(raw: Any, where: str) -> tuple[str, ...]:
    if isinstance(raw, str):
        turns = raw.split(TURN_SEPARATOR)
    elif isinstance(raw, (list, tuple)):
        for j, turn in enumerate(raw):
            if not isinstance(turn, str):
                raise DataError(f"{where}: turn {j} is {type(turn).__name__} ({turn!r}), expected a string")
        turns = list(raw)
    else:
        raise DataError(f"{where}: expected a list of turns or a string, got {type(raw).__name__} ({raw!r})")
    stripped = tuple(t.strip() for t in turns if t.strip())
    if not stripped:
        raise DataError(f"{where}: empty context")
    return stripped


def _parse_reference(raw: Any, where: str) -> str:
    if not isinstance(raw, str):
        raise DataError(f"{where}: expected a reference string, got {type(raw).__name__} ({raw!r})")
    return raw.strip()


def _parse_label(raw: Any, where: str) -> str:
    if isinstance(raw, bool) or not isinstance(raw, (str, int)):
        raise DataError(f"{where}: expected a label (string or integer), got {type(raw).__name__} ({raw!r})")
    return str(raw)


# --- sampling -------------------------------------------------------------------------------------------------


class PromptSampler:
    """Shuffled epochs over a fixed example list; the permutation of epoch e depends only on (seed, e).

    The state is (epoch, position) plus a fingerprint of the examples, so a resumed run continues with exactly
    the prompts it would have seen, and resuming over different data is an error rather than a silent reshuffle.
    """

    def __init__(self, examples: Sequence[DialogueExample], seed: int) -> None:
        if not examples:
            raise DataError("PromptSampler needs at least one example")
        self._examples = list(examples)
        self._seed = seed
        self._fingerprint = _fingerprint(self._examples)
        self._set_position(epoch=0, position=0)

    @property
    def epoch(self) -> int:
        return self._epoch

    def __len__(self) -> int:
        return len(self._examples)

    def next_batch(self, n: int) -> list[DialogueExample]:
        if n <= 0:
            raise ValueError(f"batch size must be positive, got {n}")
        batch: list[DialogueExample] = []
        while len(batch) < n:
            if self._position == len(self._examples):
                self._set_position(self._epoch + 1, 0)
            take = min(n - len(batch), len(self._examples) - self._position)
            batch.extend(self._examples[i] for i in self._order[self._position : self._position + take])
            self._position += take
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self._seed, "epoch": self._epoch, "position": self._position, "fingerprint": self._fingerprint}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("fingerprint") != self._fingerprint:
            raise DataError(
                "cannot resume the prompt sampler: the examples differ from the saved run's "
                "(data source, split, categories or max_examples changed)"
            )
        if not 0 <= int(state["position"]) <= len(self._examples) or int(state["epoch"]) < 0:
            raise DataError(f"invalid prompt sampler state: {state}")
        self._seed = int(state["seed"])
        self._set_position(int(state["epoch"]), int(state["position"]))

    def _set_position(self, epoch: int, position: int) -> None:
        self._epoch, self._position = epoch, position
        self._order = _rng(self._seed, epoch).permutation(len(self._examples))


def _fingerprint(examples: list[DialogueExample]) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for ex in examples:
        digest.update(repr((ex.context, ex.reference, ex.label)).encode())
    return digest.hexdigest()
