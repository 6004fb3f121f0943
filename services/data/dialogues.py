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
from services.data.errors import DataError
from services.data.files import LOCAL_FORMATS, Rows, is_local_file, read_rows

if TYPE_CHECKING:
    from services.config.schema import DataConfig

log = logging.getLogger(__name__)

CHATTERBOT = "chatterbot"
TURN_SEPARATOR = "<EOU>"  # RL4LMs' end-of-utterance marker in string contexts (data.turn_separator's default)

__all__ = ["DataError", "DialogueExample", "PromptSampler", "load_examples"]


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
        keyed = _chatterbot_examples(cfg)
        examples = _carve(keyed, cfg, split)
    elif cfg.eval_split is not None:
        keyed = _dataset_examples(cfg, cfg.train_split if split == "train" else cfg.eval_split)
        examples = [ex for _, ex in keyed]
    else:
        keyed = _dataset_examples(cfg, cfg.train_split)
        examples = _carve(keyed, cfg, split)
    if not examples:
        if cfg.eval_split is not None:
            raise DataError(f"data source '{cfg.source}' gave no {split} examples")
        # The split is by dialogue opening, so a few rows (or rows sharing one opening) may all land on one side.
        openings = len({key.casefold().strip() for key, _ in keyed})
        raise DataError(
            f"data source '{cfg.source}' has too few rows for a train and an eval split: its {len(keyed)} examples "
            f"({openings} distinct dialogue openings) gave no {split} examples with data.eval_fraction={cfg.eval_fraction}; "
            "add rows, change data.eval_fraction, or give data.eval_split"
        )
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

_MISSING = object()  # a JSON Lines record without the column's key
# Going without a column also means going without the rewards that read it (services/run/preflight.py).
_ALSO = {"label": " (and without rewards that score labels: rewards.topic=null for the default classifier)",
         "reference": " (and without rewards that compare with references, e.g. rewards.meteor=null)"}


def _dataset_examples(cfg: DataConfig, split_name: str) -> list[tuple[str, DialogueExample]]:
    rows, where = _load_split(cfg, split_name)
    columns = {"context": cfg.context_column, "reference": cfg.reference_column, "label": cfg.label_column}
    for role, column in columns.items():
        if column is not None and column not in rows.columns:
            disable = f"; set data.{role}_column=null to go without" + _ALSO.get(role, "") if role != "context" else ""
            raise DataError(
                f"{where}: {role} column '{column}' not found (available: {', '.join(rows.columns)}){disable}"
            )
    keyed, dropped = [], 0
    for record, place in zip(rows.records, rows.places):
        try:
            example = _example(cfg, record, f"{where} {place}, column")
        except _Empty as empty:
            if not cfg.drop_empty:
                raise DataError(f"{empty}: fill it in, or set data.drop_empty=true to drop such rows") from None
            dropped += 1
            continue
        keyed.append((example.context[0], example))
    if dropped:
        log.warning("data: dropped %d of %d rows of %s with an empty context, reference or label (data.drop_empty=true)",
                    dropped, len(rows.records), where)
    _hint_separator(cfg, rows, [ex for _, ex in keyed])
    return keyed


class _Empty(Exception):
    """A row whose context, reference or label is empty (refused, or dropped with data.drop_empty=true)."""


def _example(cfg: DataConfig, record: dict[str, Any], at: str) -> DialogueExample:
    turns = _parse_context(record.get(cfg.context_column, _MISSING), f"{at} '{cfg.context_column}'", cfg.turn_separator)
    reference = label = None
    if cfg.reference_column is not None:
        reference = _parse_reference(record.get(cfg.reference_column, _MISSING), f"{at} '{cfg.reference_column}'")
    if cfg.label_column is not None:
        label = _parse_label(record.get(cfg.label_column, _MISSING), f"{at} '{cfg.label_column}'")
    return DialogueExample(context=turns[-cfg.context_turns :], reference=reference, label=label)


def _load_split(cfg: DataConfig, split_name: str) -> tuple[Rows, str]:
    """The split's rows and how messages name it (the file, or `name [split]`)."""
    if is_local_file(cfg.source):
        path = Path(cfg.source).expanduser()
        if cfg.subset is not None:
            raise DataError(f"data.subset applies to `datasets` names, not to the local file {path}")
        if split_name != "train":
            raise DataError(f"{cfg.source}: no split '{split_name}' (available: train)")
        return read_rows(path), str(path)
    from datasets import load_dataset

    try:
        splits = load_dataset(cfg.source, cfg.subset)
    except Exception as err:  # datasets raises many types; all mean "cannot use this source"
        raise DataError(
            f"cannot load dataset '{cfg.source}' (subset {cfg.subset!r}): {err}. Hub datasets need network "
            "access unless cached; local files must end in " + "/".join(LOCAL_FORMATS)
        ) from err
    if split_name not in splits:
        raise DataError(f"{cfg.source}: no split '{split_name}' (available: {', '.join(splits)})")
    dataset = splits[split_name]
    rows = Rows(list(dataset.column_names), dataset.to_list(), [f"row {i}" for i in range(1, len(dataset) + 1)])
    return rows, f"{cfg.source} [{split_name}]"


def _describe(raw: Any) -> str:
    return "nothing (no such key)" if raw is _MISSING else f"{type(raw).__name__} ({raw!r})"


def _parse_context(raw: Any, where: str, separator: str = TURN_SEPARATOR) -> tuple[str, ...]:
    if isinstance(raw, str):
        turns = raw.split(separator)
    elif isinstance(raw, (list, tuple)):
        for j, turn in enumerate(raw, start=1):
            if not isinstance(turn, str):
                raise DataError(f"{where}: turn {j} is {type(turn).__name__} ({turn!r}), expected a string")
        turns = list(raw)
    else:
        raise DataError(f"{where}: expected a list of turns or a string, got {_describe(raw)}")
    stripped = tuple(t.strip() for t in turns if t.strip())
    if not stripped:
        raise _Empty(f"{where}: empty context")
    return stripped


def _parse_reference(raw: Any, where: str) -> str:
    if not isinstance(raw, str):
        raise DataError(f"{where}: expected a reference string, got {_describe(raw)}")
    if not raw.strip():
        raise _Empty(f"{where}: empty reference")
    return raw.strip()


def _parse_label(raw: Any, where: str) -> str:
    if isinstance(raw, bool) or not isinstance(raw, (str, int)):
        raise DataError(f"{where}: expected a label (string or integer), got {_describe(raw)}")
    if isinstance(raw, str) and not raw.strip():
        raise _Empty(f"{where}: empty label")
    return str(raw).strip()


def _hint_separator(cfg: DataConfig, rows: Rows, examples: list[DialogueExample]) -> None:
    """A corpus joined with another marker (DailyDialog's `__eou__`) would load silently as one turn per row."""
    if not examples or any(len(ex.context) > 1 for ex in examples):
        return
    texts = [r.get(cfg.context_column) for r in rows.records[:200]]
    texts = [t for t in texts if isinstance(t, str)]
    for marker, setting in (("__eou__", "__eou__"), ("\n", "newline"), (TURN_SEPARATOR, TURN_SEPARATOR)):
        if marker != cfg.turn_separator and any(marker in t for t in texts):
            log.warning("data: every context is one turn, but contexts contain %r: set data.turn_separator=%s", marker, setting)
            return


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
