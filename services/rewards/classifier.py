"""Topic-classifier reward: the offline stand-in for [000]'s intent-accuracy reward.

A linear softmax head over MiniLM embeddings of "last context utterance + ' ' + response" (as the paper's intent
classifier reads its input), trained by `services.rewards.build_classifier`. The head is stored as plain arrays
(`head.npz` + `labels.json` + `metadata.json`), never pickled, so loading it cannot execute code.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from services.rewards.base import RewardError, RewardFunction, RewardParams, ScoringBatch
from services.rewards.topic_head import LinearHead, classifier_text, default_classifier_dir

log = logging.getLogger(__name__)


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
    score_range = (0.0, 1.0)
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
                    f"reward 'classifier': sample {row + 1} of the batch has label '{label}', which the classifier does not know "
                    f"(known: {', '.join(self.head.labels)})"
                )
            targets.append(self._label_index[label])
        texts = [classifier_text(c, r) for c, r in zip(batch.contexts, batch.responses)]
        probs = self.head.probabilities(embed(self._encoder, texts, self.params.batch_size))
        if self.params.output == "correct":
            return (probs.argmax(axis=1) == np.asarray(targets)).astype(np.float64).tolist()
        return probs[np.arange(len(targets)), targets].tolist()
