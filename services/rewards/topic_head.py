"""The topic classifier's head: a linear softmax over sentence embeddings, stored as plain arrays
(`head.npz` + `labels.json` + `metadata.json`), never pickled, so loading it cannot execute code.
Shared by the reward (services/rewards/classifier.py) and its builder (services/rewards/build_classifier.py).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from services.config.paths import cache_dir

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
