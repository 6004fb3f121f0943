"""Build every offline asset the embedded default needs, once: `python -m services.assets`.

Each step is idempotent and also runs lazily on first use; running them up front (the set-up script
does) keeps the first training iteration from paying for them.
"""

from __future__ import annotations

import logging
import os
import time

from services.models.loading import EMBEDDED, resolve_model_path
from services.rewards.build_classifier import ensure_topic_classifier
from services.rewards.topic_head import default_classifier_dir
from services.rewards.wordnet import ensure_wordnet

log = logging.getLogger("crlhf.assets")


def build_all() -> None:
    steps = [
        ("WordNet for METEOR", ensure_wordnet),
        *[(f"model {name}", lambda name=name: resolve_model_path(name)) for name in EMBEDDED],
        ("topic classifier", lambda: ensure_topic_classifier(default_classifier_dir())),
    ]
    for what, step in steps:
        start = time.perf_counter()
        where = step()
        log.info("%-22s ready (%.1fs): %s", what, time.perf_counter() - start, where)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    build_all()
