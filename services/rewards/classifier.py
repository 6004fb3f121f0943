"""Topic-classifier reward: the offline stand-in for [000]'s intent-accuracy reward.

A linear softmax head over MiniLM embeddings of "last context utterance + ' ' + response" (as the paper's intent
classifier reads its input), trained by `services.rewards.build_classifier`. The head is stored as plain arrays
(`head.npz` + `labels.json` + `metadata.json`), never pickled, so loading it cannot execute code.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from services.paths import cache_dir
from services.rewards.base import RewardError, RewardFunction, RewardParams, ScoringBatch

log = logging.getLogger(__name__)

HEAD_FILE, LABELS_FILE, METADATA_FILE = "head.npz", "labels.json", "metadata.json"


def default_classifier_dir() -> Path:
    return cache_dir() / "topic_classifier"


def classifier_text(context: Sequence[str], response: str) -> str:
    return f"{context[-1]} {response}" if context else response


@dataclass(frozen=True)
class LinearHead:
    """softmax(x @ coef.T + intercept) over `labels`; coef [K, dim], intercept [K]."""

    coef: np.ndarray
    intercept: np.ndarray
    labels: list[str]

    @classmethod
    def from_sklearn(cls, model: Any) -> LinearHead:
        """From a fitted LogisticRegression. A binary model's single logit z becomes [-z/2, z/2]: same softmax."""
        coef, intercept = np.asarray(model.coef_, np.float64), np.asarray(model.intercept_, np.float64)
        if len(model.classes_) == 2:
            coef, intercept = np.concatenate([-coef / 2, coef / 2]), np.concatenate([-intercept / 2, intercept / 2])
        return cls(coef=coef, intercept=intercept, labels=[str(c) for c in model.classes_])

    def probabilities(self, embeddings: np.ndarray) -> np.ndarray:
        logits = embeddings.astype(np.float64) @ self.coef.T + self.intercept
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)

    def save(self, directory: Path, metadata: dict[str, Any]) -> None:
        np.savez(directory / HEAD_FILE, coef=self.coef, intercept=self.intercept)
        (directory / LABELS_FILE).write_text(json.dumps(self.labels, indent=1))
        (directory / METADATA_FILE).write_text(json.dumps(metadata, indent=1))

    @classmethod
    def load(cls, directory: Path) -> LinearHead:
        missing = [f for f in (HEAD_FILE, LABELS_FILE, METADATA_FILE) if not (directory / f).is_file()]
        if missing:
            raise FileNotFoundError(
                f"topic classifier in {directory} is incomplete (missing {', '.join(missing)}); rebuild it with "
                f"`python -m services.rewards.build_classifier --out {directory}`"
            )
        with np.load(directory / HEAD_FILE, allow_pickle=False) as arrays:
            coef, intercept = arrays["coef"], arrays["intercept"]
        labels = json.loads((directory / LABELS_FILE).read_text())
        if coef.ndim != 2 or coef.shape[0] != len(labels) or intercept.shape != (len(labels),):
            raise ValueError(
                f"topic classifier in {directory} is inconsistent: coef {coef.shape}, intercept {intercept.shape}, "
                f"{len(labels)} labels"
            )
        return cls(coef=coef, intercept=intercept, labels=labels)


def is_built(directory: Path) -> bool:
    return all((directory / f).is_file() for f in (HEAD_FILE, LABELS_FILE, METADATA_FILE))


class ClassifierParams(RewardParams):
    model_dir: str | None = Field(
        None, description="Built classifier dir; None = <cache>/topic_classifier, built on first use if missing."
    )
    output: Literal["prob", "correct"] = Field(
        "prob", description="'prob' = probability of the row's label; 'correct' = 1.0 if it is the argmax, else 0.0."
    )
    encoder_path: str | None = Field(
        None, description="Sentence encoder the classifier was trained on; None = bundled MiniLM."
    )
    device: str | None = Field(None, description="torch device; None = CUDA when available, else CPU.")
    batch_size: int = Field(64, gt=0)


class ClassifierReward(RewardFunction):
    kind = "classifier"
    Params = ClassifierParams
    params: ClassifierParams

    def __init__(self, params: ClassifierParams | None = None) -> None:
        super().__init__(params)
        from services.rewards.encoder import embed, load_encoder, resolve_encoder_path

        if self.params.model_dir is None:
            from services.rewards.build_classifier import ensure_topic_classifier

            directory = ensure_topic_classifier(default_classifier_dir())
        else:
            directory = Path(self.params.model_dir).expanduser()
        self.head = LinearHead.load(directory)
        self._encoder = load_encoder(resolve_encoder_path(self.params.encoder_path), self.params.device)
        dim = embed(self._encoder, [""]).shape[1]  # version-proof (the dimension getter was renamed)
        if dim != self.head.coef.shape[1]:
            raise ValueError(
                f"topic classifier in {directory} expects {self.head.coef.shape[1]}-dim embeddings but the encoder "
                f"gives {dim}: set params.encoder_path to the encoder it was built with"
            )
        self._label_index = {label: i for i, label in enumerate(self.head.labels)}

    def _score(self, batch: ScoringBatch) -> Sequence[float]:
        from services.rewards.encoder import embed

        labels = batch.require_labels(self.kind)
        targets = []
        for row, label in enumerate(labels):
            if label not in self._label_index:
                raise RewardError(
                    f"reward 'classifier': row {row} has label '{label}', which the classifier does not know "
                    f"(known: {', '.join(self.head.labels)})"
                )
            targets.append(self._label_index[label])
        texts = [classifier_text(c, r) for c, r in zip(batch.contexts, batch.responses)]
        probs = self.head.probabilities(embed(self._encoder, texts, self.params.batch_size))
        if self.params.output == "correct":
            return (probs.argmax(axis=1) == np.asarray(targets)).astype(np.float64).tolist()
        return probs[np.arange(len(targets)), targets].tolist()
